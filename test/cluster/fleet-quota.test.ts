import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, startCli, listenPorts, type RunningCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startRedis, type RunningRedis } from '../helpers/redis.js';
import { freeTcpUdpPort, startEcho, startSocks, startTcpSink } from '../helpers/servers.js';
import { openAssociation, startUdpEcho } from '../helpers/udp.js';
import { waitFor } from '../helpers/peer.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { UserStore, setUserInFile } from '../../src/server/users.js';
import { AdminServer } from '../../src/observe/admin.js';
import { NO_QUOTAS, type QuotaSettings } from '../../src/policy/quota.js';
import { quotaPeriod } from '../../src/policy/quota-period.js';
import { RedisLimitStore } from '../../src/cluster/redis-store.js';
import pino from 'pino';
import type { UsageReport } from '../../src/observe/usage.js';

const QUOTA = 4 * 1024 * 1024;
// quotas.chunk: 1/64 of the quota, the most a take asks for is twice that.
const CHUNK = QUOTA / 64;
const ALICE = { user: 'alice', pass: 'alice-secret' };

interface Instance {
  readonly cli: RunningCli;
  readonly port: number;
  readonly admin: string;
}

async function startInstance(configFile: string): Promise<Instance> {
  const adminPort = await freeTcpUdpPort();
  const cli = startCli(['serve', '--config', configFile, '--listen', '127.0.0.1:0', '--workers', '2', '--admin', `127.0.0.1:${adminPort}`, '--log-format', 'json', '--allow-loopback-targets', '--shutdown-timeout', '1']);
  const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 60_000);
  return { cli, port: listenPorts(line).get('127.0.0.1')!, admin: `127.0.0.1:${adminPort}` };
}

async function usage(instance: Instance): Promise<UsageReport> {
  return (await (await fetch(`http://${instance.admin}/users/usage`)).json()) as UsageReport;
}

/** One CONNECT as alice: its reply code, and (admitted) the peer. */
async function connectAs(port: number, target: number): Promise<{ peer: Peer; code: number }> {
  const peer = await Peer.connect(port);
  await handshake(peer, ALICE);
  peer.write(request(1, '127.0.0.1', target));
  const { code } = await readReply(peer, 10_000);
  if (code !== 0) peer.destroy();
  return { peer, code };
}

/** Writes as fast as the proxy takes it until the proxy closes the connection (at most `ms`). */
function pumpUntilClosed(peer: Peer, ms: number): Promise<void> {
  const socket = peer.socket;
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => finish(new Error(`the proxy kept the session open for ${ms} ms`)), ms);
    const finish = (error?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve();
    };
    socket.on('close', () => finish());
    socket.on('error', () => finish());
    const pump = (): void => {
      // Bounded: one pass writes until the socket's buffer is full, then waits for 'drain'.
      for (let i = 0; i < 64 && !done; i++) if (!socket.write(chunk)) return;
      if (!done) setImmediate(pump);
    };
    socket.on('drain', pump);
    pump();
  });
}

/**
 * One stream of alice's sessions: each sends until the proxy ends it (the quota), the next starts
 * at once, until `refusals` in a row got 0x02 (bounded: 300 sessions). The reply codes seen.
 */
async function driveUntilRefused(port: number, target: number, refusals: number): Promise<number[]> {
  const codes: number[] = [];
  let inRow = 0;
  for (let i = 0; i < 300 && inRow < refusals; i++) {
    const { peer, code } = await connectAs(port, target);
    codes.push(code);
    if (code !== 0) {
      inRow++;
      continue;
    }
    inRow = 0;
    await pumpUntilClosed(peer, 30_000);
  }
  return codes;
}

describe('traffic quotas across workers and instances (real processes)', () => {
  let redis: RunningRedis;
  let dir: string;
  const running: RunningCli[] = [];
  before(async () => {
    redis = await startRedis();
    dir = await mkdtemp(join(tmpdir(), 'socksgate-quota-'));
    await setUserInFile(join(dir, 'users.txt'), ALICE.user, Buffer.from(ALICE.pass));
  });
  after(async () => {
    for (const cli of running) await cli.stop().catch(() => {});
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });

  for (const store of ['local', 'redis'] as const) {
    const count = store === 'local' ? 1 : 3;
    test(`limits.store: ${store} — alice through ${count} instance(s) × 2 workers stops within one chunk of her quota`, async () => {
      const config = join(dir, `${store}.yaml`);
      const storeUrl = store === 'local' ? 'local' : redis.url;
      await writeFile(config, `users: ${join(dir, 'users.txt')}\nmetrics:\n  perUser: true\nlimits:\n  store: ${storeUrl}\nquotas:\n  period: day\n  timeZone: Europe/Berlin\n  chunk: ${CHUNK}\n  users:\n    alice:\n      total: ${QUOTA}\n`);
      const sink = await startTcpSink();
      const instances: Instance[] = [];
      // Round robin: consecutive connections go to alternate workers, so both workers of each instance relay.
      const saved = process.env.NODE_CLUSTER_SCHED_POLICY;
      process.env.NODE_CLUSTER_SCHED_POLICY = 'rr';
      try {
        for (let i = 0; i < count; i++) {
          const instance = await startInstance(config);
          running.push(instance.cli);
          instances.push(instance);
        }
      } finally {
        if (saved === undefined) delete process.env.NODE_CLUSTER_SCHED_POLICY;
        else process.env.NODE_CLUSTER_SCHED_POLICY = saved;
      }
      try {
        // Two streams per instance at once (so both of its workers), 4 at least.
        const streams = instances.length === 1 ? 4 : 2 * instances.length;
        const codes = await Promise.all(Array.from({ length: streams }, (_, i) => driveUntilRefused(instances[i % instances.length]!.port, sink.port, 4)));
        for (const seen of codes) assert.ok(seen.every((c) => c === 0 || c === 2), `reply codes ${seen.join(',')}`);
        const received = sink.received();
        assert.ok(received <= QUOTA, `${received} bytes relayed, quota ${QUOTA}`);
        assert.ok(QUOTA - received <= CHUNK, `${received} bytes relayed: stopped ${QUOTA - received} bytes before the quota ${QUOTA}, more than one chunk (${CHUNK})`);

        // Every instance's admin endpoint shows the same figure: the bytes relayed.
        const reports = await Promise.all(instances.map(usage));
        for (const report of reports) {
          const alice = report.users.find((u) => u.user === 'alice');
          assert.ok(alice, JSON.stringify(report));
          assert.equal(alice.up, received, JSON.stringify(report));
          assert.equal(alice.total, received);
          assert.deepEqual(alice.quota, { total: QUOTA, upload: 0, download: 0 });
          assert.equal(alice.remaining.total, QUOTA - received);
          assert.equal(report.period.kind, 'day');
          assert.equal(report.period.timeZone, 'Europe/Berlin');
        }

        // Per-user metrics (metrics.perUser): each primary sums its workers' bytes; the instances together relayed them all.
        let metered = 0;
        for (const instance of instances) {
          const text = await (await fetch(`http://${instance.admin}/metrics`)).text();
          const sample = text.split('\n').find((l) => l.startsWith('socksgate_user_bytes_total{user="alice",direction="up"} '));
          metered += Number(sample?.split(' ')[1] ?? 0);
        }
        assert.equal(metered, received);

        // The refusals were logged with the quota named.
        const line = instances
          .flatMap((i) => i.cli.lines)
          .find((l) => l.msg === 'quota exhausted');
        assert.ok(line, 'a "quota exhausted" log line');
        assert.equal(line.user, 'alice');
        assert.equal(line.quota, 'total');
        assert.equal(line.limit, QUOTA);
        assert.equal(line.period, 'day');
        assert.match(String(line.periodStart), /^\d{4}-\d\d-\d\dT(22|23):00:00\.000Z$/);

        // The CLI reads the same endpoint.
        const table = spawnSync(process.execPath, [CLI, 'users', 'usage', '--admin', instances[0]!.admin], { encoding: 'utf8' });
        assert.equal(table.status, 0, table.stderr);
        assert.match(table.stdout, /^alice\s+/m);
        assert.match(table.stdout, /\(exhausted\)|remaining/i);
        const json = spawnSync(process.execPath, [CLI, 'users', 'usage', '--admin', instances[0]!.admin, '--json'], { encoding: 'utf8' });
        assert.equal((JSON.parse(json.stdout) as UsageReport).users.find((u) => u.user === 'alice')?.up, received);
      } finally {
        for (const instance of instances) await instance.cli.stop();
        await sink.close();
      }
    });
  }
});

describe('traffic quotas in one process', () => {
  let dir: string;
  let users: UserStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-quota-one-'));
    await setUserInFile(join(dir, 'users.txt'), ALICE.user, Buffer.from(ALICE.pass));
    users = await UserStore.load(join(dir, 'users.txt'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const quotas = (over: Partial<QuotaSettings>): QuotaSettings => ({ ...NO_QUOTAS, chunk: 4096, ...over });

  test('finish: a live session goes on past the quota and its bytes count; new sessions get 0x02; a reload lets her in again', async () => {
    const echo = await startEcho();
    const socks = await startSocks({ users, quotas: quotas({ onExhausted: 'finish', users: { alice: { total: 256 * 1024 } } }) });
    const admin = new AdminServer(socks.server);
    const { port: adminPort } = await admin.listen('127.0.0.1', 0);
    try {
      const { peer, code } = await connectAs(socks.port, echo.port);
      assert.equal(code, 0);
      // 512 KiB through the echo: 1 MiB relayed both ways, four times the quota, and all of it comes back.
      const payload = Buffer.alloc(512 * 1024, 0x62);
      peer.write(payload);
      assert.deepEqual(await peer.read(payload.length, 10_000), payload);
      const refused = await connectAs(socks.port, echo.port);
      assert.equal(refused.code, 2);
      peer.destroy();
      const report = (await (await fetch(`http://127.0.0.1:${adminPort}/users/usage`)).json()) as UsageReport;
      const alice = report.users.find((u) => u.user === 'alice')!;
      assert.equal(alice.up, payload.length);
      assert.equal(alice.down, payload.length);
      assert.equal(alice.remaining.total, 0);
      assert.equal(alice.exhausted, true);
      // A larger quota (a reload): the account asks again, and she is admitted.
      socks.server.reload({ users, allowLoopbackTargets: true, quotas: quotas({ onExhausted: 'finish', users: { alice: { total: 4 * 1024 * 1024 } } }) });
      const again = await connectAs(socks.port, echo.port);
      assert.equal(again.code, 0);
      again.peer.destroy();
    } finally {
      await admin.close();
      await socks.close();
      await echo.close();
    }
  });

  test('end: a UDP association stops at the quota (drops counted) and its session ends; the next gets 0x02; per-user metrics opt-in', async () => {
    const echo = await startUdpEcho();
    const limit = 64 * 1024;
    const socks = await startSocks({ users, quotas: quotas({ total: limit, metricsPerUser: true }) });
    const admin = new AdminServer(socks.server);
    const { port: adminPort } = await admin.listen('127.0.0.1', 0);
    const association = await openAssociation(socks.port, { credentials: ALICE });
    try {
      assert.equal(association.reply.code, 0);
      const datagram = Buffer.alloc(1000, 0x63);
      let echoed = 0;
      // Bounded: at most 400 datagrams (400 kB, six times the quota), one in flight at a time.
      const ended = (): boolean => association.control.ended || association.control.isClosed;
      for (let i = 0; i < 400 && !ended(); i++) {
        await association.sendTo('127.0.0.1', echo.port, datagram);
        const back = await association.udp.receive(300).catch(() => null);
        if (back) echoed += back.data.length;
      }
      await waitFor(ended, 5000, 'the proxy to end the session at the quota');
      // What went up plus what came back stays within the quota.
      assert.ok(echo.received() * 1000 + echoed <= limit, `${echo.received()} datagrams up, ${echoed} bytes back, quota ${limit}`);
      assert.ok(echo.received() * 1000 + echoed >= limit - 4 * 4096, `stopped at ${echo.received() * 1000 + echoed} of ${limit}`);
      assert.ok(socks.server.udpStats.drops.quota >= 1);
      const next = await openAssociation(socks.port, { credentials: ALICE });
      assert.equal(next.reply.code, 2);
      next.close();
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      assert.match(metrics, new RegExp(`socksgate_user_bytes_total\\{user="alice",direction="up"\\} ${echo.received() * 1000}\\b`));
      assert.match(metrics, /socksgate_user_quota_refusals_total\{user="alice"\} 1\b/);
      assert.match(metrics, /socksgate_quota_refusals_total 1\b/);
    } finally {
      association.close();
      await admin.close();
      await socks.close();
      echo.close();
    }
  });

  test('store down: a live session goes on, and the bytes it relayed meanwhile are written when Redis answers again', async () => {
    const redis = await startRedis();
    const store = new RedisLimitStore(redis.url, { claimTtlMs: 3000, log: pino({ level: 'silent' }) });
    await store.open();
    const echo = await startEcho();
    const socks = await startSocks({ users, limitStore: store, quotas: quotas({ total: 64 * 1024 * 1024 }) });
    const aliceUp = async (): Promise<number> => (await store.quotaUsage(quotaPeriod(Date.now(), 'month', 'UTC'))).find((u) => u.user === 'alice')?.up ?? 0;
    try {
      const { peer, code } = await connectAs(socks.port, echo.port);
      assert.equal(code, 0);
      const first = Buffer.alloc(100_000, 0x64);
      peer.write(first);
      assert.deepEqual(await peer.read(first.length, 10_000), first);
      await redis.stop();
      await waitFor(() => !store.up, 5000, 'the store to notice Redis is gone');
      const during = Buffer.alloc(300_000, 0x65);
      peer.write(during);
      assert.deepEqual(await peer.read(during.length, 10_000), during);
      // Redis (no persistence) comes back empty: what the session relayed while it was away is written as it goes on.
      await redis.start();
      await waitFor(() => store.up, 10_000, 'the store to reconnect');
      let up = 0;
      for (let i = 0; i < 100 && up < during.length - 2 * 4096; i++) {
        peer.write(Buffer.from('x'));
        await peer.read(1);
        up = await aliceUp();
        if (up < during.length - 2 * 4096) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // At most two chunks of it came out of bytes taken before the outage (counted then, lost with Redis' data).
      assert.ok(up >= during.length - 2 * 4096 && up <= during.length + 100 + 2 * 4096, `alice's upload after the outage: ${up}`);
      peer.destroy();
    } finally {
      await socks.close();
      await echo.close();
      await redis.stop();
    }
  });

  test('per-user metrics stay off by default', async () => {
    const echo = await startEcho();
    const socks = await startSocks({ users, quotas: quotas({ total: 1024 * 1024 }) });
    const admin = new AdminServer(socks.server);
    const { port: adminPort } = await admin.listen('127.0.0.1', 0);
    try {
      const { peer, code } = await connectAs(socks.port, echo.port);
      assert.equal(code, 0);
      peer.write(Buffer.from('hello'));
      assert.equal((await peer.read(5)).toString(), 'hello');
      peer.destroy();
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      assert.doesNotMatch(metrics, /user="alice"/);
      assert.match(metrics, /socksgate_quota_refusals_total 0\b/);
    } finally {
      await admin.close();
      await socks.close();
      await echo.close();
    }
  });
});
