/**
 * Run by test/udp/gso-fallback.test.ts inside a namespace whose loopback MTU is lowered
 * (`ip netns exec NS node gso-probe.js run SIZE COUNT`): a relay socket answers COUNT datagrams of SIZE
 * bytes from inside their batches, and prints one JSON line: what came back and the GSO counters.
 * Without the `run` argument (as when the test runner loads it) it does nothing.
 */
import { createSocket } from 'node:dgram';
import { gsoCounters, udpIo } from '../../src/native/addon.js';
import { openRelay } from '../../src/udp/relay-socket.js';

async function probe(size: number, count: number): Promise<void> {
  const relay = await openRelay();
  relay.receive({
    onDatagram: (datagram, address, port) => void relay.send(Buffer.from('re:'), datagram, port, address),
    onSendError: (code, n) => errors.push(`${code} x${n}`),
  });
  const errors: string[] = [];
  const peer = createSocket('udp4');
  await new Promise<void>((resolve) => peer.bind(0, '127.0.0.1', resolve));
  const replies: Buffer[] = [];
  peer.on('message', (data) => replies.push(data));
  const payload = (i: number): Buffer => Buffer.alloc(size, `datagram ${i} `);
  const before = gsoCounters();
  // All in one go, so the relay reads them in one batch and answers them in one flush.
  await Promise.all(Array.from({ length: count }, (_, i) => new Promise<void>((resolve, reject) => peer.send(payload(i), relay.port, '127.0.0.1', (e) => (e ? reject(e) : resolve())))));
  const deadline = Date.now() + 3000;
  while (replies.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  const after = gsoCounters();
  const exact = replies.filter((data, i) => data.equals(Buffer.concat([Buffer.from('re:'), payload(i)]))).length;
  process.stdout.write(
    `${JSON.stringify({ native: udpIo().native, sent: count, received: replies.length, exact, errors, gsoDatagrams: after.datagrams - before.datagrams })}\n`,
  );
  peer.close();
  relay.close();
}

if (process.argv[2] === 'run') {
  probe(Number(process.argv[3]), Number(process.argv[4])).catch((error: Error) => {
    process.stdout.write(`${JSON.stringify({ error: error.message })}\n`);
    process.exitCode = 1;
  });
}
