// The limits group of `npm run bench`: UDP through socksgate with a per-user rate on, leased from the
// local store (the primary) and from Redis, against the same login with no limits. The rate is set far
// above the traffic, so it never refuses a datagram: what is left is the cost of counting and leasing.
// Target: within 5% of the figure without limits, which shows that leases keep the store off the hot path.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { freePort, startServer, tempDir, type RunningServer } from './peers.js';
import { start, stop, waitForPort, type Started } from './procs.js';
import type { Figure } from './report.js';
import { redisCommand } from '../test/helpers/redis.js';
import { requireProgram } from '../test/helpers/servers.js';

const USER = 'bench';
const PASSWORD = 'bench-password';
const RATE_FLAGS = ['--limits-user-udp-packets-per-second', '1000000', '--limits-user-udp-bytes-per-second', '1000000000'];
export const LIMITS_SIZES = [512];

export type LimitsPeer = 'login' | 'local' | 'redis';
export const LIMITS_PEERS: readonly LimitsPeer[] = ['login', 'local', 'redis'];

/** The generator's login flags for the limits group's servers. */
export const LIMITS_LOGIN = [`user=${USER}`, `pass=${PASSWORD}`];

export interface LimitsServers {
  readonly servers: Record<LimitsPeer, RunningServer>;
  /** The Redis server's script calls so far (leases, claims, renewals): EVALSHA and EVAL in INFO commandstats. */
  storeRequests(): Promise<number>;
  stop(): Promise<void>;
}

/** One socksgate with a login and no limits, one with the rate on the local store, one on a Redis of its own. */
export async function startLimitsServers(cli: string, nofile: number): Promise<LimitsServers> {
  const dir = tempDir();
  const users = join(dir, 'users.txt');
  execFileSync(process.execPath, [cli, 'passwd', '--file', users, USER], { input: `${PASSWORD}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
  const redisPort = await freePort();
  const redis: Started = start('redis-server', requireProgram('redis-server', 'redis-server'),
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
  const started: RunningServer[] = [];
  try {
    await waitForPort(redisPort, redis);
    const login = ['--users', users];
    const servers = {
      login: await startServer('socksgate', cli, nofile, { extra: login }),
      local: await startServer('socksgate', cli, nofile, { extra: [...login, ...RATE_FLAGS] }),
      redis: await startServer('socksgate', cli, nofile, { extra: [...login, ...RATE_FLAGS, '--limits-store', `redis://127.0.0.1:${redisPort}`] }),
    };
    started.push(...Object.values(servers));
    return {
      servers,
      async storeRequests() {
        const stats = await redisCommand(redisPort, 'INFO commandstats');
        let calls = 0;
        for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
        return calls;
      },
      async stop() {
        for (const s of started) await stop(s.process);
        await stop(redis);
      },
    };
  } catch (e) {
    for (const s of started) await stop(s.process);
    await stop(redis);
    throw e;
  }
}

/** The figures: per association count, one with the local store and one with Redis, each against no limits. */
export function limitsFigures(assocs: readonly number[]): Map<string, Figure> {
  const figures = new Map<string, Figure>();
  for (const size of LIMITS_SIZES) {
    for (const assoc of assocs) {
      for (const store of ['local', 'redis'] as const) {
        figures.set(`${store}/${size}/${assoc}`, {
          id: `limits-${store}-${size}-${assoc}`, group: 'limits', label: `per-user rate, ${store === 'local' ? 'local store' : 'Redis'}: UDP ${size} B, ${assoc} assoc`,
          unit: 'datagrams/s', higherIsBetter: true, target: 0.95, baseline: 'socksgate-login', samples: {}, ...(store === 'redis' ? { storeRequests: [] } : {}),
        });
      }
    }
  }
  return figures;
}
