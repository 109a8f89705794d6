import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCli, listenPorts, type RunningCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startRedis, type RunningRedis } from '../helpers/redis.js';
import { freeTcpUdpPort, startSocks, startTcpSink } from '../helpers/servers.js';
import { handshake, loginStatus, readReply, request } from '../helpers/socks-bytes.js';
import pino from 'pino';
import { RedisLimitStore } from '../../src/cluster/redis-store.js';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { waitFor } from '../helpers/peer.js';
import { openAssociation, type TestAssociation } from '../helpers/udp.js';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const RATE = 400_000;
const UDP_RATE = 200_000;

/** A UDP target that counts the payload bytes it receives. */
async function startUdpSink(): Promise<{ port: number; received: () => number; close: () => void }> {
  const socket = createSocket('udp4');
  let received = 0;
  socket.on('message', (data) => (received += data.length));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return { port: socket.address().port, received: () => received, close: () => socket.close() };
}

/**
 * A UDP association of `user` from 127.0.0.2 sending 1000-byte datagrams to the sink at `perSecond` bytes
 * a second (paced every 10 ms), until stop() or 60 s.
 */
async function udpSender(port: number, sink: number, credentials: { user: string; pass: string }, perSecond: number): Promise<{ stop: () => void }> {
  const association: TestAssociation = await openAssociation(port, { from: '127.0.0.2', credentials });
  assert.equal(association.reply.code, 0);
  const payload = Buffer.alloc(1000, 0x62);
  const started = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    const elapsed = performance.now() - started;
    if (elapsed > 60_000) return clearInterval(timer);
    // Catch up to the pace (at most 50 datagrams a tick), so a slow tick does not lower the offered rate.
    for (let i = 0; i < 50 && sent * payload.length < (elapsed * perSecond) / 1000; i++, sent++) void association.sendTo('127.0.0.1', sink, payload).catch(() => {});
  }, 10);
  return {
    stop: () => {
      clearInterval(timer);
      association.close();
    },
  };
}

async function startInstance(extra: string[]): Promise<{ cli: RunningCli; port: number }> {
  const adminPort = await freeTcpUdpPort();
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--workers', '2', '--admin', `127.0.0.1:${adminPort}`, '--log-format', 'json', '--allow-loopback-targets', ...extra]);
  const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 60_000);
  return { cli, port: listenPorts(line).get('127.0.0.1')! };
}

/** A CONNECT from 127.0.0.2 that writes as fast as the proxy takes it, until stop(). */
async function bulkSender(port: number, target: number, credentials?: { user: string; pass: string }): Promise<{ stop: () => void; alive: () => boolean }> {
  const peer = await Peer.connect(port, '127.0.0.1', '127.0.0.2');
  await handshake(peer, credentials);
  peer.write(request(1, '127.0.0.1', target));
  assert.equal((await readReply(peer)).code, 0);
  const socket = peer.socket;
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  let stopped = false;
  const pump = (): void => {
    // Bounded: one pass writes until the socket's buffer is full, then waits for 'drain'.
    for (let i = 0; i < 64 && !stopped; i++) if (!socket.write(chunk)) return;
    if (!stopped) setImmediate(pump);
  };
  socket.on('drain', pump);
  pump();
  let closed = false;
  socket.once('close', () => (closed = true));
  return {
    stop: () => {
      stopped = true;
      peer.destroy();
    },
    alive: () => !closed,
  };
}

/**
 * Bytes through the senders after a warm-up that spends the bucket's initial burst: the rate over a
 * measured interval (bytes counted at its two ends, divided by its measured length).
 */
async function measuredRate(received: () => number, warmupMs: number, intervalMs: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, warmupMs));
  const startBytes = received();
  const start = performance.now();
  await new Promise((resolve) => setTimeout(resolve, intervalMs));
  return ((received() - startBytes) * 1000) / (performance.now() - start);
}

describe('rates across workers and instances (leases)', () => {
  let redis: RunningRedis;
  const running: RunningCli[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const cli of running) await cli.stop().catch(() => {});
    await redis.stop();
  });

  for (const store of ['local', 'redis'] as const) {
    const instancesCount = store === 'local' ? 1 : 3;
    test(`limits.store: ${store} — one user's UDP through ${instancesCount} instance(s) × 2 workers stays within 10% of its rate`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'socksgate-udp-rate-'));
      const users = join(dir, 'users.txt');
      const passwd = startCli(['passwd', '--file', users, 'ann'], 'secret\n');
      assert.equal(await passwd.exited(), 0, passwd.stderr);
      const sink = await startUdpSink();
      const instances: Array<{ cli: RunningCli; port: number }> = [];
      const senders: Array<{ stop: () => void }> = [];
      try {
        for (let i = 0; i < instancesCount; i++) {
          const instance = await startInstance(['--users', users, '--limits-user-udp-bytes-per-second', String(UDP_RATE), '--limits-store', store === 'local' ? 'local' : redis.url]);
          running.push(instance.cli);
          instances.push(instance);
        }
        // Four associations per instance (with its 2 workers, almost surely on both), together offering 3× the rate.
        const count = instancesCount * 4;
        for (let i = 0; i < count; i++) senders.push(await udpSender(instances[i % instancesCount]!.port, sink.port, { user: 'ann', pass: 'secret' }, (3 * UDP_RATE) / count));
        const rate = await measuredRate(sink.received, 2000, 4000);
        const error = Math.abs(rate - UDP_RATE) / UDP_RATE;
        assert.ok(error <= 0.1, `measured ${Math.round(rate)} B/s through ${senders.length} associations, configured ${UDP_RATE} B/s (${(error * 100).toFixed(1)}% off)`);
      } finally {
        for (const s of senders) s.stop();
        for (const instance of instances) await instance.cli.stop();
        sink.close();
        await rm(dir, { recursive: true, force: true });
      }
    });

    test(`limits.store: ${store} — one client through ${instancesCount} instance(s) × 2 workers stays within 10% of its TCP rate`, async () => {
      const sink = await startTcpSink();
      const instances: Array<{ cli: RunningCli; port: number }> = [];
      const senders: Array<{ stop: () => void }> = [];
      try {
        for (let i = 0; i < instancesCount; i++) {
          // A throttled session reads its client only as fast as the rate: it sees the client gone only after
          // the bytes already queued, so shutdown does not wait for that.
          const instance = await startInstance(['--shutdown-timeout', '1', '--limits-client-tcp-bytes-per-second', String(RATE), '--limits-store', store === 'local' ? 'local' : redis.url]);
          running.push(instance.cli);
          instances.push(instance);
        }
        // Two sessions per instance at least (with its 2 workers, most likely on both of them), 4 in all at least.
        for (let i = 0; i < Math.max(4, instancesCount * 2); i++) senders.push(await bulkSender(instances[i % instancesCount]!.port, sink.port));
        const rate = await measuredRate(sink.received, 1500, 4000);
        const error = Math.abs(rate - RATE) / RATE;
        assert.ok(error <= 0.1, `measured ${Math.round(rate)} B/s through ${senders.length} sessions, configured ${RATE} B/s (${(error * 100).toFixed(1)}% off)`);
      } finally {
        for (const s of senders) s.stop();
        for (const instance of instances) await instance.cli.stop();
        await sink.close();
      }
    });
  }
  test('Redis stopped: rates and lockout fall back to each process, live sessions go on; restarted: rates shared again', async () => {
    const log = pino({ level: 'silent' });
    const users = UserStore.fromEntries([['ann', await hashPassword(Buffer.from('right'), 10)]]);
    const sink = await startTcpSink();
    const servers = await Promise.all(
      [0, 1].map(async () => {
        const store = new RedisLimitStore(redis.url, { claimTtlMs: 3000, log });
        await store.open();
        return startSocks({ users, auth: { slowAfter: 100, blockAfter: 3, blockMs: 60_000, windowMs: 60_000 }, limits: { client: { tcpBytesPerSecond: RATE } }, limitStore: store });
      }),
    );
    const ann = { user: 'ann', pass: 'right' };
    const senders = [await bulkSender(servers[0]!.port, sink.port, ann), await bulkSender(servers[1]!.port, sink.port, ann)];
    try {
      const shared = await measuredRate(sink.received, 1500, 3000);
      assert.ok(Math.abs(shared - RATE) / RATE <= 0.1, `Redis up: ${Math.round(shared)} B/s through both servers, configured ${RATE} B/s`);

      await redis.stop();
      await waitFor(() => servers.every((s) => s.server.limitStore?.up === false), 5000, 'every store to notice Redis is gone');
      // Each process' own bucket decides: two servers pass twice the rate, and neither session ends.
      const alone = await measuredRate(sink.received, 1500, 3000);
      assert.ok(Math.abs(alone - 2 * RATE) / (2 * RATE) <= 0.1, `Redis down: ${Math.round(alone)} B/s through both servers, each allowing ${RATE} B/s`);
      assert.ok(senders.every((s) => s.alive()), 'live sessions go on while the store is down');
      // Failed logins count per process. With blockAfter 3 a login counts as a failure until its check passes, so
      // across the fleet one failure on each server and a third try would block; alone, each server saw one.
      for (const s of servers) assert.equal(await loginStatus(s.port, '127.0.0.9', 'ann', 'wrong'), 1);
      assert.equal(await loginStatus(servers[0]!.port, '127.0.0.9', 'ann', 'right'), 0, 'each process counts only its own failures while Redis is down');

      await redis.start();
      await waitFor(() => servers.every((s) => s.server.limitStore?.up === true), 10_000, 'every store to reconnect');
      const again = await measuredRate(sink.received, 1500, 3000);
      assert.ok(Math.abs(again - RATE) / RATE <= 0.1, `Redis back: ${Math.round(again)} B/s through both servers, configured ${RATE} B/s`);
      assert.ok(senders.every((s) => s.alive()), 'live sessions went through the outage');
    } finally {
      for (const s of senders) s.stop();
      await Promise.all(servers.map((s) => s.close()));
      await sink.close();
      if (redis.pid() === 0) await redis.start();
    }
  });
});
