// CONNECT tunnels under load: on the native helper in the native pass of `npm test`, on the stream
// relay in the TypeScript pass. Slow readers (backpressure), half-close each way, a target that
// resets, and descriptors back to baseline.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'node:test';
import { connect } from 'socksgate-client';
import type { SessionEnd } from '../../src/server/server.js';
import { udpIo } from '../../src/native/addon.js';
import { waitFor } from '../helpers/peer.js';
import { startSocks } from '../helpers/servers.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Deterministic bytes: block i of 64 KiB filled from a hash of (seed, i). */
function pattern(seed: string, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let at = 0, i = 0; at < size; at += 32, i++) createHash('sha256').update(`${seed}/${i}`).digest().copy(out, at);
  return out;
}

/** Reads a socket to its end, pausing `stallMs` after every `every` bytes (a slow reader). */
function readAll(socket: Socket, stallMs = 0, every = 4 * 1024 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let sinceStall = 0;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      sinceStall += chunk.length;
      if (stallMs > 0 && sinceStall >= every) {
        sinceStall = 0;
        socket.pause();
        setTimeout(() => socket.resume(), stallMs);
      }
    });
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

test('CONNECT: 24 MiB up and 8 MiB down through slow readers, each FIN passed on after its bytes, counted exactly', async () => {
  const up = pattern('up', 24 * 1024 * 1024);
  const down = pattern('down', 8 * 1024 * 1024);
  let received: Promise<Buffer> | null = null;
  const target = createServer({ allowHalfOpen: true }, (socket) => {
    // The target reads slowly, and answers only after the client's FIN (half-close).
    received = readAll(socket, 150);
    void received.then(() => socket.end(down));
  });
  const port = await listen(target);
  const socks = await startSocks();
  try {
    const ended = new Promise<SessionEnd>((resolve) => socks.server.once('session-end', resolve));
    const client = await connect({ proxy: `socks5://127.0.0.1:${socks.port}`, host: '127.0.0.1', port });
    const answer = readAll(client, 150);
    await waitFor(() => socks.server.snapshot().length === 1, 3000, 'the session');
    const session = socks.server.snapshot()[0] as Record<string, unknown>;
    assert.equal(session.relay, udpIo().native ? 'native' : undefined, 'the tunnel runs where this pass says');
    client.end(up);
    assert.ok((await waitForValue(() => received)).equals(up), 'client → target byte-exact, then its FIN');
    assert.ok((await answer).equals(down), 'target → client byte-exact, then its FIN');
    const end = await ended;
    assert.deepEqual([end.command, end.result, end.up, end.down], ['connect', 'ok', up.length, down.length]);
  } finally {
    target.close();
    await socks.close();
  }
});

test('CONNECT: a target that resets mid-transfer ends the tunnel; descriptors return to baseline', async () => {
  const sockets = new Set<Socket>();
  const target = createServer((socket) => {
    sockets.add(socket);
    socket.once('data', () => setTimeout(() => socket.resetAndDestroy(), 20));
  });
  const port = await listen(target);
  const socks = await startSocks();
  try {
    const once = async (): Promise<void> => {
      const client = await connect({ proxy: `socks5://127.0.0.1:${socks.port}`, host: '127.0.0.1', port });
      client.on('error', () => {});
      const closed = new Promise((resolve) => client.once('close', resolve));
      // Keeps writing until the proxy passes the reset on by closing.
      const chunk = Buffer.alloc(256 * 1024, 7);
      const writer = setInterval(() => client.destroyed || client.write(chunk), 5);
      await closed;
      clearInterval(writer);
    };
    await once();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'warm-up session to end');
    await sleep(50);
    const fds = openFds();
    for (let i = 0; i < 20; i++) await once();
    await waitFor(() => socks.server.sessionCount === 0, 5000, 'every session to end');
    await waitFor(() => openFds() <= fds, 5000, `descriptors back to ${fds} (now ${openFds()})`);
  } finally {
    for (const s of sockets) s.destroy();
    target.close();
    await socks.close();
  }
});

async function waitForValue<T>(get: () => Promise<T> | null): Promise<T> {
  await waitFor(() => get() !== null, 5000, 'the target to accept');
  return get()!;
}
