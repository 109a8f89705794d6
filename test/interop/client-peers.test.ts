// Our client against real third-party SOCKS5 servers from Debian: Dante, v2ray's SOCKS inbound and
// microsocks (TCP only). Byte-exact CONNECT streams, BIND where the server has it, UDP ASSOCIATE
// datagrams where it has them, and a chain through all three.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { associate, connect, connectWithReply, type UdpAssociation } from 'socksgate-client';
import { Peer } from '../helpers/peer.js';
import { startDante, startEcho } from '../helpers/servers.js';
import { startMicrosocks, startV2ray } from '../helpers/socks-peers.js';
import { startUdpEcho } from '../helpers/udp.js';

async function streamExact(socket: Socket, size: number, chunk: number): Promise<void> {
  const peer = new Peer(socket);
  const data = randomBytes(size);
  for (let at = 0; at < size; at += chunk) peer.write(data.subarray(at, at + chunk));
  assert.ok((await peer.read(size, 60_000)).equals(data), `${size} bytes came back byte for byte`);
  peer.destroy();
}

async function datagramsExact(udp: UdpAssociation, port: number, sizes: readonly number[]): Promise<void> {
  for (const size of sizes) {
    const payload = randomBytes(size);
    const back = new Promise<{ payload: Buffer; from: { host: string; port: number } }>((resolve) => udp.once('message', resolve));
    await udp.send(payload, '127.0.0.1', port);
    const got = await back;
    assert.ok(got.payload.equals(payload), `a ${size}-byte datagram came back byte for byte`);
    assert.deepEqual([got.from.host, got.from.port], ['127.0.0.1', port]);
  }
}

// What each server puts in BND of a CONNECT reply: Dante the address it connects to the target from,
// v2ray its own SOCKS listener, microsocks 0.0.0.0:0.
type BoundIs = 'outgoing' | 'listener' | 'unspecified';
const peers: Record<string, { start: () => Promise<{ port: number; close(): Promise<void> }>; bound: BoundIs; datagrams: readonly number[]; size: number; chunk: number }> = {
  Dante: { start: startDante, bound: 'outgoing', datagrams: [0, 1, 512, 1400, 8000], size: 1_000_000, chunk: 65_536 },
  // v2ray drops empty datagrams and cuts payloads at 2038 bytes.
  'v2ray (SOCKS inbound)': { start: startV2ray, bound: 'listener', datagrams: [1, 512, 1400, 2038], size: 1_000_000, chunk: 65_536 },
  // microsocks has no UDP ASSOCIATE and is slow on large writes: smaller writes, fewer bytes.
  microsocks: { start: startMicrosocks, bound: 'unspecified', datagrams: [], size: 200_000, chunk: 4096 },
};

for (const [name, peer] of Object.entries(peers)) {
  describe(`socksgate-client against ${name}`, () => {
    let server: { port: number; close(): Promise<void> };
    let echo: Awaited<ReturnType<typeof startEcho>>;
    let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
    before(async () => {
      server = await peer.start();
      echo = await startEcho();
      udpEcho = await startUdpEcho();
    });
    after(async () => {
      udpEcho.close();
      await Promise.all([server.close(), echo.close()]);
    });

    test('CONNECT: a byte-exact stream, and the bound address the target saw', async () => {
      const { socket, bound } = await connectWithReply({ proxy: { host: '127.0.0.1', port: server.port }, host: '127.0.0.1', port: echo.port });
      await streamExact(socket, peer.size, peer.chunk);
      if (peer.bound === 'outgoing') assert.equal(echo.peers.at(-1), `${bound.host}:${bound.port}`, 'the echo saw the connection come from BND');
      if (peer.bound === 'listener') assert.deepEqual([bound.host, bound.port], ['127.0.0.1', server.port]);
      if (peer.bound === 'unspecified') assert.deepEqual([bound.host, bound.port], ['0.0.0.0', 0]);
    });

    if (peer.datagrams.length > 0) {
      test('UDP ASSOCIATE: byte-exact datagrams both ways', async () => {
        const udp = await associate({ proxy: { host: '127.0.0.1', port: server.port } });
        try {
          await datagramsExact(udp, udpEcho.port, peer.datagrams);
        } finally {
          udp.close();
        }
      });
    }
  });
}

describe('a chain through Dante, v2ray and microsocks', () => {
  test('CONNECT through all three, byte for byte', async () => {
    const [dante, v2ray, micro, echo] = await Promise.all([startDante(), startV2ray(), startMicrosocks(), startEcho()]);
    try {
      const socket = await connect({
        proxy: [`socks5h://127.0.0.1:${dante.port}`, `socks5h://127.0.0.1:${v2ray.port}`, `socks5h://127.0.0.1:${micro.port}`],
        host: '127.0.0.1',
        port: echo.port,
      });
      await streamExact(socket, 100_000, 4096);
    } finally {
      await Promise.all([dante.close(), v2ray.close(), micro.close(), echo.close()]);
    }
  });
});
