import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { RedisLimitStore } from '../../src/cluster/redis-store.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startRedis, type RunningRedis } from '../helpers/redis.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { handshake, loginStatus, readReply, request } from '../helpers/socks-bytes.js';
import { UserStore, hashPassword } from '../../src/server/users.js';

const log = pino({ level: 'silent' });

/** Connected clients of the Redis server (CLIENT LIST has one line per connection, this probe's own included). */
async function clients(redis: RunningRedis): Promise<number> {
  const reply = await redis.command('CLIENT LIST');
  return reply.split('\n').filter((l) => l.startsWith('id=')).length;
}

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

async function connected(port: number, target: number, from: string): Promise<{ peer: Peer; code: number }> {
  const peer = await Peer.connect(port, '127.0.0.1', from);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', target));
  return { peer, code: (await readReply(peer)).code };
}

async function echoes(peer: Peer, text: string): Promise<void> {
  peer.write(Buffer.from(text));
  assert.equal((await peer.read(text.length, 5000)).toString(), text);
}

describe('limits.store: redis', () => {
  let redis: RunningRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  test('claims are exact across three stores; a release frees a place; close releases connections and timers', async () => {
    const baseTimers = timers();
    const stores = [0, 1, 2].map(() => new RedisLimitStore(redis.url, { claimTtlMs: 3000, log }));
    await Promise.all(stores.map((s) => s.open()));
    assert.ok(stores.every((s) => s.up));
    assert.equal(await clients(redis), 4);
    const granted: boolean[] = [];
    for (let i = 0; i < 7; i++) granted.push(await stores[i % 3]!.claim('user', 'ann', 3));
    assert.deepEqual(granted, [true, true, true, false, false, false, false]);
    // Another key is not affected.
    assert.equal(await stores[2]!.claim('client', '127.0.0.2', 1), true);
    stores[1]!.release('user', 'ann');
    assert.equal(await stores[2]!.claim('user', 'ann', 3), true);
    assert.equal(await stores[0]!.claim('user', 'ann', 3), false);
    assert.deepEqual(stores.map((s) => s.holds('user', 'ann')), [1, 0, 2]);
    await Promise.all(stores.map((s) => s.close()));
    await Promise.all(stores.map((s) => s.close()));
    await waitFor(() => timers() <= baseTimers, 3000, 'the renewal timers to go');
    assert.equal(await clients(redis), 1, 'only the probe is connected after close');
    // A closed store deleted its alive key: a new store's claim drops the fields of all three at once.
    const fresh = new RedisLimitStore(redis.url, { claimTtlMs: 3000, log });
    await fresh.open();
    try {
      for (let i = 0; i < 3; i++) assert.equal(await fresh.claim('user', 'ann', 3), true);
      assert.equal(await fresh.claim('user', 'ann', 3), false);
    } finally {
      await fresh.close();
    }
  });

  test('three servers share the per-client cap; Redis stopped: live sessions go on, new ones fall back; restarted: shared again', async () => {
    const echo = await startEcho();
    const servers = await Promise.all(
      [0, 1, 2].map(async () => {
        const store = new RedisLimitStore(redis.url, { claimTtlMs: 3000, log });
        await store.open();
        return startSocks({ limits: { sessionsPerClient: 2 }, limitStore: store });
      }),
    );
    const open: Peer[] = [];
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) {
        const s = await connected(servers[i % 3]!.port, echo.port, '127.0.0.2');
        codes.push(s.code);
        open.push(s.peer);
      }
      assert.deepEqual(codes, [0, 0, 0x01, 0x01]);
      assert.equal(servers.reduce((n, s) => n + s.server.stats.sessionsOverLimit, 0), 2);

      await redis.stop();
      await waitFor(() => servers.every((s) => s.server.limitStore?.up === false), 5000, 'every store to notice Redis is gone');
      // The live sessions do not notice.
      await echoes(open[0]!, 'still here 0');
      await echoes(open[1]!, 'still here 1');
      // New sessions: each process' own cap decides (server 2 holds none of 127.0.0.2's sessions).
      const fallback = await connected(servers[2]!.port, echo.port, '127.0.0.2');
      open.push(fallback.peer);
      assert.equal(fallback.code, 0);
      assert.equal(servers[2]!.server.limitStore?.fallbacks, 1);

      await redis.start();
      await waitFor(() => servers.every((s) => s.server.limitStore?.up === true), 10_000, 'every store to reconnect');
      // Each store writes its counts again on reconnecting (Redis came back empty): the fleet holds the 2 claims of before.
      for (let i = 0; i < 100 && !(await redis.command('HLEN socksgate:sessions:client:127.0.0.2')).startsWith(':2'); i++) await new Promise((r) => setTimeout(r, 50));
      const again = await connected(servers[1]!.port, echo.port, '127.0.0.2');
      open.push(again.peer);
      assert.equal(again.code, 0x01, 'shared cap enforced again after Redis returned');
      await echoes(open[0]!, 'after the return');
      // The two claimed sessions and the refused ones leave; the fallback session (never claimed) stays.
      for (const i of [0, 1, 2, 3, 5]) open[i]!.destroy();
      await waitFor(() => servers.reduce((n, s) => n + s.server.sessionCount, 0) === 1, 5000, 'the sessions to leave');
      const last = await connected(servers[0]!.port, echo.port, '127.0.0.2');
      open.push(last.peer);
      assert.equal(last.code, 0);
    } finally {
      for (const p of open) p.destroy();
      await Promise.all(servers.map((s) => s.close()));
      await echo.close();
      if (redis.pid() === 0) await redis.start();
    }
  });

  test('failed logins count across the fleet: 3 wrong passwords on 3 servers block the address on all of them', async () => {
    const users = UserStore.fromEntries([['ann', await hashPassword(Buffer.from('right'), 10)]]);
    const auth = { slowAfter: 100, blockAfter: 3, blockMs: 60_000, windowMs: 60_000 };
    const servers = await Promise.all(
      [0, 1, 2].map(async () => {
        const store = new RedisLimitStore(redis.url, { claimTtlMs: 3000, log });
        await store.open();
        return startSocks({ users, auth, limitStore: store });
      }),
    );
    try {
      // Each server sees one failure: none of them would block alone (blockAfter 3).
      for (const s of servers) assert.notEqual(await loginStatus(s.port, '127.0.0.9', 'ann', 'wrong'), 0);
      // The right password on the first server: its own count is 1, the fleet's 4 — refused.
      assert.notEqual(await loginStatus(servers[0]!.port, '127.0.0.9', 'ann', 'right'), 0, 'the address is blocked fleet-wide');
      assert.equal(servers.reduce((n, s) => n + s.server.stats.authFailures, 0) >= 3, true);
      // Another address is not affected.
      const other = await Peer.connect(servers[1]!.port, '127.0.0.1', '127.0.0.10');
      await handshake(other, { user: 'ann', pass: 'right' });
      other.destroy();
    } finally {
      await Promise.all(servers.map((s) => s.close()));
    }
  });
});
