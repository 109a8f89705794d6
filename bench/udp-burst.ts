// `npm run bench:burst`: how much of a burst a relay socket holds while the process is busy, by
// receive buffer size (udp.receiveBuffer). Datagrams of 1200 to 3600 bytes (2.4 KB on average) are
// sent at an association's relay socket from another thread while this process's event loop is
// blocked; afterwards each was either read (and dropped by us: it comes from a stranger) or dropped
// by the kernel on a full receive queue. On the dgram relay the kernel's count is read back too.
import { udpIo } from '../src/native/addon.js';
import { SocksServer } from '../src/server/server.js';
import { openAssociation } from '../test/helpers/udp.js';
import { burstWhileBlocked } from '../test/helpers/udp-thread.js';

const BURST = Number(process.env.BURST_SIZE ?? 200);
const ROUNDS = Number(process.env.BURST_ROUNDS ?? 5);
const sizes = Array.from({ length: BURST }, (_, i) => 1200 + ((i * 977) % 2401));

async function held(receiveBuffer: number): Promise<{ held: number[]; overflow: number }> {
  const server = new SocksServer({ listen: [{ host: '127.0.0.1', port: 0 }], allowLoopbackTargets: true, udp: { receiveBuffer } });
  const [bound] = await server.listen();
  const association = await openAssociation(bound!.port, { declare: 'port' });
  const out: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const before = server.udpStats.drops.source;
      await burstWhileBlocked(association.reply.port, sizes);
      // Read what the queue held; the rest never comes (no new datagram for 1 s ends the count).
      for (let last = -1; server.udpStats.drops.source !== last; ) {
        last = server.udpStats.drops.source;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
      out.push(server.udpStats.drops.source - before);
    }
    server.sampleKernelDrops();
    return { held: out, overflow: server.udpStats.drops['kernel-overflow'] };
  } finally {
    association.close();
    await server.close();
  }
}

process.stdout.write(`relay: ${udpIo().description}\n${ROUNDS} bursts of ${BURST} datagrams (2.4 KB on average) at a blocked process, per receive buffer\n\n`);
process.stdout.write('udp.receiveBuffer | datagrams held per burst | kernel-overflow counted\n--- | --- | ---\n');
for (const size of [0, 256 * 1024, 512 * 1024, 1024 * 1024, 4 * 1024 * 1024]) {
  const result = await held(size);
  process.stdout.write(`${size === 0 ? '0 (kernel default)' : `${size / 1024} KiB`} | ${result.held.join(', ')} | ${result.overflow}\n`);
}
