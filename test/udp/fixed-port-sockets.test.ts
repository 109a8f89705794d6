// The fixed port's shared sockets below the cluster.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { pino } from 'pino';
import { PYTHON } from '../helpers/python.js';
import { FixedPortDemux } from '../../src/udp/demux.js';
import { KernelDrops } from '../../src/udp/kernel-drops.js';
import { UdpStats } from '../../src/udp/stats.js';
import { nativeLoaded } from '../../src/native/addon.js';
import { openClientSocket, openSharedSocket, type RelayReceiver, type RelaySocket } from '../../src/udp/relay-socket.js';
import { UdpPeer } from '../helpers/udp.js';

class Collector implements RelayReceiver {
  readonly datagrams: Array<{ data: string; address: string; port: number }> = [];
  onDatagram(datagram: Buffer, address: string, port: number): void {
    this.datagrams.push({ data: datagram.toString(), address, port });
  }
  onSendError(): void {}
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(check(), what);
}

test("a socket of the fixed port connected to one client hears all of that client's datagrams, the shared ones the rest", { skip: !nativeLoaded() && 'SO_REUSEPORT sockets are the native helper\'s' }, async () => {
  const sharedA: RelaySocket = await openSharedSocket('127.0.0.1', 0, true);
  const sharedB: RelaySocket = await openSharedSocket('127.0.0.1', sharedA.port, true);
  const client = await UdpPeer.bind('127.0.0.1');
  const others = await Promise.all([0, 1, 2, 3].map(() => UdpPeer.bind('127.0.0.1')));
  const connected = openClientSocket('127.0.0.1', sharedA.port, '127.0.0.1', client.port)!;
  const [heardA, heardB, heardC] = [new Collector(), new Collector(), new Collector()];
  sharedA.receive(heardA);
  sharedB.receive(heardB);
  connected.receive(heardC);
  try {
    assert.equal(connected.port, sharedA.port, 'one port for all three');
    for (let i = 0; i < 20; i++) {
      await client.send(Buffer.from(`client ${i}`), sharedA.port, '127.0.0.1');
      for (const other of others) await other.send(Buffer.from(`other ${i}`), sharedA.port, '127.0.0.1');
    }
    await until('every datagram heard', () => heardA.datagrams.length + heardB.datagrams.length + heardC.datagrams.length === 100);
    assert.deepEqual(heardC.datagrams.map((d) => d.data), Array.from({ length: 20 }, (_, i) => `client ${i}`), 'the client\'s, all and in order');
    assert.ok(heardC.datagrams.every((d) => d.port === client.port));
    assert.ok([...heardA.datagrams, ...heardB.datagrams].every((d) => d.data.startsWith('other')), 'none of the client\'s reached a shared socket');
    // Closed (its descriptor once the loop has run the close), the connected socket leaves its client to the shared ones again.
    connected.close();
    const heardShared = (): boolean => [...heardA.datagrams, ...heardB.datagrams].some((d) => d.data === 'after close');
    for (let i = 0; i < 50 && !heardShared(); i++) {
      await client.send(Buffer.from('after close'), sharedA.port, '127.0.0.1');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(heardShared(), 'heard by a shared socket');
  } finally {
    connected.close();
    sharedA.close();
    sharedB.close();
    client.close();
    for (const other of others) other.close();
  }
});

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
