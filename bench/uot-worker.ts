// Runs inside a network namespace made by bench/udp-over-tcp.ts: a socksgate server, a UDP echo and a
// client, all on the namespace's loopback, where nftables drops a share of all packets. Prints one JSON line.
import { createSocket } from 'node:dgram';
import { associate } from 'socksgate-client';
import { SocksServer } from '../src/server/server.js';

const SECONDS = Number(process.argv[2] ?? 5);
const WINDOW = 16;
const SIZE = 512;
const LOSS_TIMEOUT_MS = 300;

async function echoServer(): Promise<{ port: number; close(): void }> {
  const socket = createSocket('udp4');
  socket.on('message', (data, from) => socket.send(data, from.port, from.address));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return { port: socket.address().port, close: () => socket.close() };
}

async function run(transport: 'udp' | 'tcp', proxyPort: number, echoPort: number): Promise<Record<string, number | string>> {
  const udp = await associate({ proxy: `socks5://127.0.0.1:${proxyPort}`, transport });
  const sentAt = new Map<number, number>();
  const rtts: number[] = [];
  let next = 0;
  let lost = 0;
  const payload = Buffer.alloc(SIZE);
  const sendOne = (): void => {
    const id = next++;
    payload.writeUInt32BE(id, 0);
    sentAt.set(id, performance.now());
    void udp.send(payload, '127.0.0.1', echoPort).catch(() => {});
  };
  udp.on('message', ({ payload: reply }) => {
    const id = reply.readUInt32BE(0);
    const at = sentAt.get(id);
    if (at === undefined) return;
    sentAt.delete(id);
    rtts.push(performance.now() - at);
    if (running) sendOne();
  });
  let running = true;
  for (let i = 0; i < WINDOW; i++) sendOne();
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const [id, at] of sentAt) {
      if (now - at > LOSS_TIMEOUT_MS) {
        sentAt.delete(id);
        lost++;
        if (running) sendOne();
      }
    }
  }, 50);
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  running = false;
  await new Promise((resolve) => setTimeout(resolve, LOSS_TIMEOUT_MS + 100));
  clearInterval(sweeper);
  lost += sentAt.size;
  udp.close();
  rtts.sort((a, b) => a - b);
  const pick = (q: number): number => Math.round((rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))] ?? Number.NaN) * 100) / 100;
  return {
    transport,
    sent: next,
    received: rtts.length,
    lostPercent: Math.round((lost / Math.max(1, next)) * 1000) / 10,
    perSecond: Math.round(rtts.length / SECONDS),
    p50ms: pick(0.5),
    p99ms: pick(0.99),
    maxMs: pick(1),
  };
}

const echo = await echoServer();
const server = new SocksServer({ listen: [{ host: '127.0.0.1', port: 0 }], allowLoopbackTargets: true });
const [bound] = await server.listen();
const results = [];
for (const transport of ['udp', 'tcp'] as const) results.push(await run(transport, bound!.port, echo.port));
echo.close();
await server.close();
process.stdout.write(`${JSON.stringify(results)}\n`);
