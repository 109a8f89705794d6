import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { setFlagsFromString, getHeapStatistics } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { waitFor } from '../helpers/peer.js';
import { startSocks } from '../helpers/servers.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const openFds = (): number => readdirSync('/proc/self/fd').length;

function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc();
  return getHeapStatistics().used_heap_size;
}

async function cycles(socksPort: number, echoPort: number, count: number, concurrency: number): Promise<void> {
  let next = 0;
  // Each concurrent client has its own address: in fixed-port mode, two associations from one IP that
  // both declared port 0 and wait for their first datagram make it ambiguous, and it is dropped (by design).
  const worker = async (_: unknown, w: number): Promise<void> => {
    while (next < count) {
      const id = next++;
      const a = await openAssociation(socksPort, { declare: id % 2 === 0 ? 'port' : 'zero', from: `127.0.0.${20 + w}` });
      try {
        await a.sendTo('127.0.0.1', echoPort, Buffer.from(`cycle ${id}`));
        assert.equal(unwrap((await a.udp.receive(3000)).data).data.toString(), `cycle ${id}`);
      } finally {
        a.close();
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

for (const mode of ['per-association sockets', 'fixed-port mode'] as const) {
  test(`${mode}: thousands of associate/send/close cycles leave descriptors and heap at baseline`, async () => {
    const echo = await startUdpEcho();
    const socks = await startSocks(mode === 'fixed-port mode' ? { udp: { port: 0 } } : {});
    try {
      // Warm up allocations that live for the process (JIT, pools) before the baseline.
      await cycles(socks.port, echo.port, 200, 10);
      await waitFor(() => socks.server.udpStats.activeAssociations === 0 && socks.server.sessionCount === 0, 5000, 'warm-up to finish');
      const fds = openFds();
      const heap = heapUsed();
      await cycles(socks.port, echo.port, 5000, 20);
      await waitFor(() => socks.server.udpStats.activeAssociations === 0 && socks.server.sessionCount === 0 && socks.server.demuxSize === 0, 5000, 'all associations to close');
      await waitFor(() => openFds() <= fds, 5000, `descriptors back to ${fds} (now ${openFds()})`);
      const growth = heapUsed() - heap;
      assert.ok(growth < 4 * 1024 * 1024, `heap grew by ${(growth / 1024).toFixed(0)} KiB over 5000 associations`);
      assert.equal(socks.server.udpStats.associationsOpened - socks.server.udpStats.associationsClosed, 0);
    } finally {
      echo.close();
      await socks.close();
    }
  });
}
