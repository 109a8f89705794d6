import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

async function connected(port: number, target: number, from?: string, credentials?: { user: string; pass: string }): Promise<{ peer: Peer; code: number }> {
  const peer = await Peer.connect(port, '127.0.0.1', from);
  await handshake(peer, credentials);
  peer.write(request(1, '127.0.0.1', target));
  return { peer, code: (await readReply(peer)).code };
}

describe('session limits', () => {
  test('per client address: over the cap gets 0x01; other addresses are unaffected; leaving frees a place', async () => {
    const echo = await startEcho();
    const socks = await startSocks({ limits: { sessionsPerClient: 2 } });
    try {
      const a = await connected(socks.port, echo.port, '127.0.0.2');
      const b = await connected(socks.port, echo.port, '127.0.0.2');
      const c = await connected(socks.port, echo.port, '127.0.0.2');
      assert.deepEqual([a.code, b.code, c.code], [0, 0, 0x01]);
      const other = await connected(socks.port, echo.port, '127.0.0.3');
      assert.equal(other.code, 0);
      assert.equal(socks.server.stats.sessionsOverLimit, 1);
      a.peer.destroy();
      c.peer.destroy();
      await waitFor(() => socks.server.sessionCount === 2, 3000, 'a and the refused c to leave');
      const d = await connected(socks.port, echo.port, '127.0.0.2');
      assert.equal(d.code, 0);
      for (const s of [b, c, d, other]) s.peer.destroy();
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });

  test('per user, with 0x02 as the configured reply', async () => {
    const echo = await startEcho();
    const users = UserStore.fromEntries([['ann', await hashPassword(Buffer.from('pw'), 10)]]);
    const socks = await startSocks({ users, limits: { sessionsPerUser: 1, overLimitReply: 'not-allowed' } });
    try {
      const first = await connected(socks.port, echo.port, '127.0.0.2', { user: 'ann', pass: 'pw' });
      const second = await connected(socks.port, echo.port, '127.0.0.3', { user: 'ann', pass: 'pw' });
      assert.deepEqual([first.code, second.code], [0, 0x02]);
      first.peer.destroy();
      second.peer.destroy();
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });
});

describe('rate limits', () => {
  test('UDP datagrams per second per client: the excess is dropped and counted', async () => {
    const echo = await startUdpEcho();
    const socks = await startSocks({ limits: { client: { udpPacketsPerSecond: 10 } } });
    const a = await openAssociation(socks.port);
    try {
      const started = performance.now();
      for (let i = 0; i < 50; i++) await a.sendTo('127.0.0.1', echo.port, Buffer.from([i]));
      const stats = socks.server.udpStats;
      await waitFor(() => stats.forwardedDatagrams + stats.drops['rate-limited'] === 50, 15_000, 'all 50 to be settled');
      // The burst (10), plus what the bucket refilled while the datagrams came in: a slow, loaded
      // machine refills more, so the bound follows the time they took instead of assuming it.
      const refilled = Math.ceil((10 * (performance.now() - started)) / 1000);
      assert.ok(stats.forwardedDatagrams >= 10 && stats.forwardedDatagrams <= 10 + refilled, `forwarded ${stats.forwardedDatagrams} (at most ${10 + refilled})`);
      assert.equal(stats.drops['rate-limited'], 50 - stats.forwardedDatagrams);
    } finally {
      a.close();
      echo.close();
      await socks.close();
    }
  });

  test('UDP bytes per second are shared by all associations of one client', async () => {
    const echo = await startUdpEcho();
    const socks = await startSocks({ limits: { client: { udpBytesPerSecond: 100_000 } } });
    const a = await openAssociation(socks.port);
    const b = await openAssociation(socks.port);
    try {
      const block = randomBytes(10_000);
      const started = performance.now();
      for (let i = 0; i < 10; i++) {
        await a.sendTo('127.0.0.1', echo.port, block);
        await b.sendTo('127.0.0.1', echo.port, block);
      }
      const stats = socks.server.udpStats;
      await waitFor(() => stats.forwardedDatagrams + stats.drops['rate-limited'] === 20, 15_000, 'all 20 to be settled');
      // 100 kB of burst, plus 100 kB/s of refill for as long as the datagrams took to come in.
      const refilled = Math.ceil((10 * (performance.now() - started)) / 1000);
      assert.ok(stats.forwardedDatagrams >= 10 && stats.forwardedDatagrams <= 10 + refilled, `forwarded ${stats.forwardedDatagrams} of 20 × 10 kB at 100 kB/s (at most ${10 + refilled})`);
    } finally {
      a.close();
      b.close();
      echo.close();
      await socks.close();
    }
  });

  test('TCP bytes per second pace a CONNECT relay, byte-exact', async () => {
    const echo = await startEcho();
    const socks = await startSocks({ limits: { client: { tcpBytesPerSecond: 400_000 } } });
    try {
      const { peer, code } = await connected(socks.port, echo.port);
      assert.equal(code, 0);
      const data = randomBytes(400_000);
      const started = Date.now();
      peer.write(data);
      const back = await peer.read(data.length, 10_000);
      const elapsed = Date.now() - started;
      assert.ok(back.equals(data));
      // 800 kB both ways at 400 kB/s with a 400 kB burst: at least about one second.
      assert.ok(elapsed >= 800, `took ${elapsed} ms`);
      peer.destroy();
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });
});

describe('UDP association limits', () => {
  test('destinations per association', async () => {
    const echo = await startUdpEcho();
    const socks = await startSocks({ limits: { destinationsPerAssociation: 2 } });
    const a = await openAssociation(socks.port);
    try {
      await a.sendTo('127.0.0.1', echo.port, Buffer.from('1'));
      await a.sendTo('::1', 9, Buffer.from('2'));
      await a.sendTo('127.0.0.2', 9, Buffer.from('3'));
      await a.sendTo('127.0.0.1', echo.port, Buffer.from('again'));
      await waitFor(() => socks.server.udpStats.drops['too-many-destinations'] === 1, 2000, 'the third destination to be refused');
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), '1');
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'again');
    } finally {
      a.close();
      echo.close();
      await socks.close();
    }
  });

  test('anti-amplification: replies beyond ratio × sent (plus burst) are dropped and counted', async () => {
    // A target that answers each datagram with ten of the same size.
    const amplifier = createSocket('udp4');
    amplifier.on('message', (data, from) => {
      for (let i = 0; i < 10; i++) amplifier.send(data, from.port, from.address);
    });
    await new Promise<void>((resolve) => amplifier.bind(0, '127.0.0.1', () => resolve()));
    const socks = await startSocks({ limits: { amplificationRatio: 3, amplificationBurst: 0 } });
    const a = await openAssociation(socks.port);
    try {
      await a.sendTo('127.0.0.1', amplifier.address().port, Buffer.alloc(100, 1));
      const stats = socks.server.udpStats;
      await waitFor(() => stats.deliveredDatagrams + stats.drops.amplification === 10, 2000, 'the ten replies to be settled');
      assert.equal(stats.deliveredDatagrams, 3);
      assert.equal(stats.drops.amplification, 7);
    } finally {
      a.close();
      amplifier.close();
      await socks.close();
    }
  });
});

describe('failed logins', () => {
  test('are slowed, then the address is blocked; other addresses still log in', async () => {
    const echo = await startEcho();
    const users = UserStore.fromEntries([['ann', await hashPassword(Buffer.from('right'), 10)]]);
    const socks = await startSocks({ users, auth: { slowAfter: 2, blockAfter: 4, blockMs: 60_000, windowMs: 60_000 } });
    const attempt = async (from: string, pass: string): Promise<{ status: number | null; ms: number }> => {
      const peer = await Peer.connect(socks.port, '127.0.0.1', from);
      const started = Date.now();
      peer.write(Buffer.concat([greeting(2), userPass('ann', pass)]));
      const answer = await peer.readToEnd(10_000);
      peer.destroy();
      return { status: answer.length >= 4 ? answer[3]! : null, ms: Date.now() - started };
    };
    try {
      const first = await attempt('127.0.0.2', 'wrong');
      const second = await attempt('127.0.0.2', 'wrong');
      const third = await attempt('127.0.0.2', 'wrong');
      assert.deepEqual([first.status, second.status, third.status], [1, 1, 1]);
      assert.ok(third.ms >= 200, `the third attempt waited ${third.ms} ms`);
      await attempt('127.0.0.2', 'wrong');
      // Blocked: even the right password gets no answer now.
      const blocked = await attempt('127.0.0.2', 'right');
      assert.equal(blocked.status, null);
      assert.ok(socks.server.stats.authBlocked >= 1);
      assert.equal(socks.server.stats.authFailures, 4);
      const other = await connected(socks.port, echo.port, '127.0.0.3', { user: 'ann', pass: 'right' });
      assert.equal(other.code, 0);
      other.peer.destroy();
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });
});
