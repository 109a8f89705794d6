// The fixed port's shared sockets below the cluster.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { pino } from 'pino';
import { PYTHON } from '../helpers/python.js';
import { FixedPortDemux } from '../../src/udp/demux.js';
import { KernelDrops } from '../../src/udp/kernel-drops.js';
import { UdpStats } from '../../src/udp/stats.js';

test("the fixed port's socket: its kernel receive-queue drops are counted", async () => {
  const stats = new UdpStats();
  const kernelDrops = new KernelDrops(stats);
  const demux = new FixedPortDemux(stats, pino({ level: 'silent' }), null, kernelDrops);
  try {
    const port = await demux.bind('127.0.0.1', 0);
    // The loop is blocked while a child floods the socket (bounded: 40,000 datagrams of 1,000 bytes,
    // more than its receive buffer holds), so the kernel drops what does not fit.
    const flood = spawnSync(PYTHON, ['-c', `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(40000):
    try:
        s.sendto(b'x' * 1000, ('127.0.0.1', ${port}))
    except OSError:
        pass
`], { timeout: 20_000 });
    assert.equal(flood.status, 0, flood.stderr?.toString());
    kernelDrops.sample();
    assert.ok(stats.drops['kernel-overflow'] > 0, `kernel drops counted: ${stats.drops['kernel-overflow']}`);
    assert.ok(stats.drops['kernel-overflow'] < 40000);
  } finally {
    await demux.close();
  }
});
