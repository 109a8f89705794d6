import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCli, listenPorts, type RunningCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startRedis, type RunningRedis } from '../helpers/redis.js';
import { freeTcpUdpPort, startEcho } from '../helpers/servers.js';
import { handshake, loginStatus, readReply, request } from '../helpers/socks-bytes.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface Instance {
  readonly cli: RunningCli;
  readonly port: number;
  readonly admin: string;
}

interface Status {
  sessions: Array<{ client: string; command: string; worker: number }>;
  workers: Array<{ worker: number; pid: number; sessions: number }>;
  limitStore?: { kind: string; up: boolean; fallbacks: number; refusals: number };
}

async function startInstance(extra: string[]): Promise<Instance> {
  const adminPort = await freeTcpUdpPort();
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--workers', '2', '--admin', `127.0.0.1:${adminPort}`, '--log-format', 'json', '--allow-loopback-targets', ...extra]);
  const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 60_000);
  return { cli, port: listenPorts(line).get('127.0.0.1')!, admin: `http://127.0.0.1:${adminPort}` };
}

async function status(instance: Instance): Promise<Status> {
  return (await (await fetch(`${instance.admin}/api/status`)).json()) as Status;
}

async function session(port: number, target: number): Promise<{ peer: Peer; code: number }> {
  const peer = await Peer.connect(port, '127.0.0.1', '127.0.0.2');
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', target));
  const { code } = await readReply(peer);
  if (code !== 0) peer.destroy();
  return { peer, code };
}

/** Tries a session every 100 ms until one is admitted (at most `tries`); the tries it took. */
async function admittedAfter(port: number, target: number, tries: number, open: Peer[]): Promise<number> {
  for (let i = 1; i <= tries; i++) {
    const s = await session(port, target);
    if (s.code === 0) {
      open.push(s.peer);
      return i;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no session admitted in ${tries} tries`);
}

function killByPid(pids: number[]): void {
  for (const pid of pids) process.kill(pid, 'SIGKILL');
}

describe('session caps across workers and instances (real processes)', () => {
  let redis: RunningRedis;
  const running: RunningCli[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const cli of running) await cli.stop().catch(() => {});
    await redis.stop();
  });

  test('limits.store: local — places idle on one worker go to the other (recall), and the cap stays exact', async () => {
    // Round robin: consecutive connections go to alternate workers, so freed places keep changing hands.
    const saved = process.env.NODE_CLUSTER_SCHED_POLICY;
    process.env.NODE_CLUSTER_SCHED_POLICY = 'rr';
    const echo = await startEcho();
    const open: Peer[] = [];
    let one: Instance;
    try {
      one = await startInstance(['--limits-sessions-per-client', '2']);
    } finally {
      if (saved === undefined) delete process.env.NODE_CLUSTER_SCHED_POLICY;
      else process.env.NODE_CLUSTER_SCHED_POLICY = saved;
    }
    running.push(one.cli);
    const live = async (): Promise<number> => (await status(one)).sessions.filter((s) => s.client.includes('127.0.0.2')).length;
    try {
      for (let i = 0; i < 2; i++) {
        const s = await session(one.port, echo.port);
        assert.equal(s.code, 0, `session ${i + 1} of 2`);
        open.push(s.peer);
      }
      // 12 rounds: the cap refuses a third session, then one ends and the next is admitted, whichever
      // worker held the place it frees.
      for (let round = 0; round < 12; round++) {
        const over = await session(one.port, echo.port);
        assert.notEqual(over.code, 0, `round ${round}: a third session was admitted`);
        open.shift()!.destroy();
        for (let i = 0; i < 200 && (await live()) > 1; i++) await new Promise((resolve) => setTimeout(resolve, 25));
        const next = await session(one.port, echo.port);
        assert.equal(next.code, 0, `round ${round}: a freed place was not given to the next session`);
        open.push(next.peer);
      }
    } finally {
      for (const peer of open) peer.destroy();
      await echo.close();
    }
  });

  test('limits.store: local — exact across 2 workers; a killed worker gives its claims back at once', async () => {
    const echo = await startEcho();
    const open: Peer[] = [];
    const one = await startInstance(['--limits-sessions-per-client', '3']);
    running.push(one.cli);
    try {
      const codes: number[] = [];
      for (let i = 0; i < 6; i++) {
        const s = await session(one.port, echo.port);
        codes.push(s.code);
        if (s.code === 0) open.push(s.peer);
      }
      assert.deepEqual(codes, [0, 0, 0, 1, 1, 1], 'exactly 3 sessions across the workers');
      const before = await status(one);
      assert.deepEqual(before.limitStore, { kind: 'local', up: true, fallbacks: 0, refusals: 0 }, 'the status page shows the store, merged over the workers');
      const busy = before.workers.find((w) => w.sessions > 0)!;
      const held = before.sessions.filter((s) => s.worker === busy.worker && s.client.includes('127.0.0.2')).length;
      assert.ok(held >= 1);
      killByPid([busy.pid]);
      // Its sessions are gone; exactly that many places are free across the survivors (no wait for a TTL).
      for (let i = 0; i < held; i++) await admittedAfter(one.port, echo.port, 100, open);
      const over = await session(one.port, echo.port);
      assert.equal(over.code, 1, 'the cap holds again once the places are taken');
    } finally {
      for (const p of open) p.destroy();
      await one.cli.stop();
      await echo.close();
    }
  });

  test('limits.store: local — failed logins count across the workers: the address is blocked on both', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'socksgate-lockout-'));
    const users = join(dir, 'users.txt');
    const passwd = startCli(['passwd', '--file', users, 'ann'], 'right\n');
    assert.equal(await passwd.exited(), 0, passwd.stderr);
    const one = await startInstance(['--users', users, '--auth-block-after', '3', '--auth-slow-after', '100']);
    running.push(one.cli);
    /** The workers that logged a failed login of `from`, once all `count` are logged. */
    const failedOn = async (from: string, count: number): Promise<Set<unknown>> => {
      const failed = (l: Record<string, unknown>): boolean => l.msg === 'session end' && String(l.client).startsWith(`${from}:`) && l.result === 'authentication failed';
      await one.cli.waitForLine(() => one.cli.lines.filter(failed).length === count);
      return new Set(one.cli.lines.filter(failed).map((l) => l.worker));
    };
    try {
      // Each address: 3 wrong passwords, then the right one 6 times, all refused. Counted per worker, a worker that
      // saw fewer than 3 failures would let the right password in. Which worker takes a connection is the kernel's
      // choice: it proves the point once an address's failures fell on both workers (bounded: 8 addresses).
      let proven = false;
      for (let n = 0; n < 8 && !proven; n++) {
        const from = `127.0.0.${30 + n}`;
        for (let i = 0; i < 3; i++) assert.equal(await loginStatus(one.port, from, 'ann', 'wrong'), 1);
        for (let i = 0; i < 6; i++) assert.notEqual(await loginStatus(one.port, from, 'ann', 'right'), 0, `${from}: the right password got in after 3 failures`);
        proven = (await failedOn(from, 3)).size === 2;
      }
      assert.ok(proven, 'in 8 tries no address had its failed logins on both workers');
      // Another address logs in.
      assert.equal(await loginStatus(one.port, '127.0.0.60', 'ann', 'right'), 0);
    } finally {
      await one.cli.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('limits.store: redis — exact across 3 instances × 2 workers; a killed instance\'s claims end within claimTtl', async () => {
    const echo = await startEcho();
    const open: Peer[] = [];
    const claimTtl = 6;
    const instances: Instance[] = [];
    for (let i = 0; i < 3; i++) {
      const instance = await startInstance(['--limits-sessions-per-client', '3', '--limits-store', redis.url, '--limits-claim-ttl', String(claimTtl)]);
      running.push(instance.cli);
      instances.push(instance);
    }
    try {
      const codes: number[] = [];
      for (let i = 0; i < 9; i++) {
        const s = await session(instances[i % 3]!.port, echo.port);
        codes.push(s.code);
        if (s.code === 0) open.push(s.peer);
      }
      assert.deepEqual(codes, [0, 0, 0, 1, 1, 1, 1, 1, 1], 'exactly 3 sessions across the fleet');
      for (const instance of instances) assert.deepEqual((await status(instance)).limitStore, { kind: 'redis', up: true, fallbacks: 0, refusals: 0 });

      // Instance 0 holds one of them. Killed (workers first, so none drains), its claim outlives it...
      const victim = instances[0]!;
      const pids = (await status(victim)).workers.map((w) => w.pid);
      killByPid([...pids, victim.cli.child.pid!]);
      await victim.cli.exited();
      assert.equal((await session(instances[1]!.port, echo.port)).code, 1, 'the dead instance\'s claim still counts at first');
      // ...until its workers' alive keys expire: each has at most claimTtl left (nobody renews them now).
      let aliveKeys = 0;
      for (const pid of pids) {
        const keys = (await redis.command(`KEYS socksgate:alive:*:${pid}:*`)).split('\r\n').filter((l) => l.startsWith('socksgate:'));
        for (const key of keys) {
          const left = Number((await redis.command(`PTTL ${key}`)).slice(1));
          assert.ok(left > 0 && left <= claimTtl * 1000, `${key} expires in ${left} ms, within claimTtl`);
          aliveKeys++;
        }
      }
      assert.equal(aliveKeys, 2, 'one alive key per worker of the dead instance');
      // Then a place is free again (tries 100 ms apart, bounded to 3 × claimTtl).
      await admittedAfter(instances[1]!.port, echo.port, claimTtl * 30, open);
      assert.equal((await session(instances[2]!.port, echo.port)).code, 1, 'exactly one place came free');
    } finally {
      for (const p of open) p.destroy();
      for (const instance of instances) await instance.cli.stop();
      await echo.close();
    }
  });
});
