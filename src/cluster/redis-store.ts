import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ClaimKind, Dimension, LimitStore } from '../policy/store.js';
import type { QuotaDirection, QuotaGrant, QuotaLimits, UserUsage } from '../policy/quota-ledger.js';
import type { QuotaPeriod } from '../policy/quota-period.js';

/** Keys of the store, all under this prefix. */
const PREFIX = 'socksgate:';
// A command the store has not answered within this is given up on (the session falls back).
const COMMAND_TIMEOUT_MS = 1000;
// Reconnect attempts come at most this far apart while the store is away.
const MAX_RECONNECT_DELAY_MS = 1000;

/*
 * A session claim: the hash KEYS[1] holds, per instance, the sessions it claims for one client
 * address or user. Fields of instances whose "alive" key has expired are dropped first: that is how
 * the claims of a dead instance end within claimTtl. KEYS[2] is the caller's own alive key.
 * The alive keys are computed here, so the store must be one Redis server (not Redis Cluster).
 * ARGV: instance, limit, ttl ms, alive key prefix. Returns 1 (granted) or 0 (the fleet holds limit).
 */
const CLAIM = `
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  if fields[i] ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. fields[i]) == 0 then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    total = total + tonumber(fields[i + 1])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

// Gives one claim back: KEYS[1] the hash; ARGV[1] the instance.
const RELEASE = `
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left
`;

/*
 * The fleet's rate bucket KEYS[1] (tokens, ms of the last refill), refilled by the server's clock at
 * ARGV[1] per second up to ARGV[2] and starting full; takes up to ARGV[3] tokens (a lease) or, with
 * ARGV[4] = 1, puts ARGV[3] back. Returns the tokens leased. The key expires once it would be full.
 */
const LEASE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then tokens = burst; at = now end
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local granted = 0
if ARGV[4] == '1' then
  tokens = math.min(burst, tokens + n)
else
  granted = math.max(0, math.min(n, math.floor(tokens)))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return granted
`;

// One failed login of an address: the count within the window (the window starts at the first). KEYS[1]; ARGV[1] window ms.
const FAILED = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`;

// Takes back one failure counted in advance: KEYS[1].
const FORGIVEN = `
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('GET', KEYS[1])) > 0 then return redis.call('DECR', KEYS[1]) end
return 0
`;

/*
 * A take of a user's traffic quota: KEYS[1] the hash of the user's period (fields up, down: bytes
 * handed out), KEYS[2] the set of users with figures in the period. ARGV: user, direction (0 up,
 * 1 down), bytes wanted, force (1: record them whatever the quota), total, upload, download quotas
 * (0: none), ms when the keys expire. Returns {granted, up, down}.
 */
const QUOTA_TAKE = `
local up = tonumber(redis.call('HGET', KEYS[1], 'up') or '0')
local down = tonumber(redis.call('HGET', KEYS[1], 'down') or '0')
local dir, want = ARGV[2], tonumber(ARGV[3])
local total, upload, download = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local granted = want
if ARGV[4] ~= '1' then
  if total > 0 then granted = math.min(granted, total - up - down) end
  if dir == '0' and upload > 0 then granted = math.min(granted, upload - up) end
  if dir == '1' and download > 0 then granted = math.min(granted, download - down) end
  granted = math.max(0, granted)
end
if dir == '0' then up = redis.call('HINCRBY', KEYS[1], 'up', granted) else down = redis.call('HINCRBY', KEYS[1], 'down', granted) end
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[8])
return {granted, up, down}
`;

// Bytes of a quota take given back unused: KEYS[1] the hash; ARGV direction (0, 1), bytes. Never below 0.
const QUOTA_GIVE_BACK = `
local field = ARGV[1] == '0' and 'up' or 'down'
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[1], field, -tonumber(ARGV[2]))
if left < 0 then redis.call('HSET', KEYS[1], field, 0) end
return left
`;

// Figures stay this long after their period ended (for a look back at the last one).
const QUOTA_KEEP_MS = 7 * 86_400_000;

interface Held {
  /** Claims granted and not given back. */
  count: number;
  /** Claims sent and not answered: the renewal leaves this key alone meanwhile. */
  pending: number;
}

type ClaimingRedis = Redis & {
  sgClaim(hash: string, alive: string, instance: string, limit: number, ttlMs: number, alivePrefix: string): Promise<number>;
  sgRelease(hash: string, instance: string): Promise<number>;
  sgFailed(key: string, windowMs: number): Promise<number>;
  sgForgiven(key: string): Promise<number>;
  sgLease(bucket: string, rate: number, burst: number, n: number, back: 0 | 1): Promise<number>;
  sgQuotaTake(hash: string, users: string, user: string, direction: QuotaDirection, want: number, force: 0 | 1, total: number, upload: number, download: number, expireAt: number): Promise<[number, number, number]>;
  sgQuotaGiveBack(hash: string, direction: QuotaDirection, bytes: number): Promise<number>;
};

export interface RedisStoreOptions {
  /** How long the claims of an instance that stopped renewing them still count (ms). */
  readonly claimTtlMs: number;
  readonly log: Logger;
}

/**
 * limits.store: redis://…, the session claims of every instance using one Redis server. Each
 * process renews its claims every third of the claim TTL (and writes its own counts again, which
 * repairs what an outage or a timed-out claim left wrong); claims of a process that stops renewing
 * expire. When the store is away, claims reject at once and the gate falls back (one warning).
 */
export class RedisLimitStore implements LimitStore {
  readonly kind = 'redis';
  /** Names this process' claims in the store. */
  readonly instance = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  private readonly redis: ClaimingRedis;
  private readonly held = new Map<string, Held>();
  private readonly renewal: NodeJS.Timeout;
  private readonly aliveKey: string;
  private wasUp = false;
  private warned = false;
  private closing: Promise<void> | null = null;
  /** Times the store went away (for metrics). */
  outages = 0;

  constructor(
    url: string,
    private readonly options: RedisStoreOptions,
  ) {
    this.aliveKey = `${PREFIX}alive:${this.instance}`;
    this.redis = new Redis(url, {
      // Nothing waits for a store that is away: commands fail at once and the gate falls back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(times * 100, MAX_RECONNECT_DELAY_MS),
      lazyConnect: true,
    }) as ClaimingRedis;
    this.redis.defineCommand('sgClaim', { numberOfKeys: 2, lua: CLAIM });
    this.redis.defineCommand('sgRelease', { numberOfKeys: 1, lua: RELEASE });
    this.redis.defineCommand('sgLease', { numberOfKeys: 1, lua: LEASE });
    this.redis.defineCommand('sgFailed', { numberOfKeys: 1, lua: FAILED });
    this.redis.defineCommand('sgForgiven', { numberOfKeys: 1, lua: FORGIVEN });
    this.redis.defineCommand('sgQuotaTake', { numberOfKeys: 2, lua: QUOTA_TAKE });
    this.redis.defineCommand('sgQuotaGiveBack', { numberOfKeys: 1, lua: QUOTA_GIVE_BACK });
    this.redis.on('ready', this.onReady);
    this.redis.on('error', this.onError);
    this.redis.on('close', this.onClose);
    this.renewal = setInterval(() => this.renew(), Math.max(1000, Math.floor(options.claimTtlMs / 3)));
    this.renewal.unref();
  }

  /** Connects; resolves once the store answers or could not be reached in time (then the gate falls back until it is). */
  async open(): Promise<void> {
    await this.redis.connect().catch(() => {});
  }

  get up(): boolean {
    return this.redis.status === 'ready';
  }

  async claim(kind: ClaimKind, key: string, limit: number): Promise<boolean> {
    const hash = this.hashKey(kind, key);
    let held = this.held.get(hash);
    if (!held) this.held.set(hash, (held = { count: 0, pending: 0 }));
    held.pending++;
    try {
      const granted = (await this.redis.sgClaim(hash, this.aliveKey, this.instance, limit, this.options.claimTtlMs, `${PREFIX}alive:`)) === 1;
      if (granted) held.count++;
      return granted;
    } finally {
      held.pending--;
    }
  }

  release(kind: ClaimKind, key: string): void {
    const hash = this.hashKey(kind, key);
    const held = this.held.get(hash);
    if (!held || held.count === 0) return;
    held.count--;
    // A release the store misses is repaired by the next renewal, which writes this count.
    if (this.up) this.redis.sgRelease(hash, this.instance).catch(() => {});
  }

  lease(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, want: number): Promise<number> {
    return this.redis.sgLease(`${PREFIX}rate:${kind}:${dimension}:${key}`, rate, burst, want, 0);
  }

  loginFailed(address: string, windowMs: number): Promise<number> {
    return this.redis.sgFailed(`${PREFIX}login-failures:${address}`, windowMs);
  }

  loginForgiven(address: string): void {
    if (this.up) this.redis.sgForgiven(`${PREFIX}login-failures:${address}`).catch(() => {});
  }

  giveBack(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, tokens: number): void {
    if (this.up && tokens > 0) this.redis.sgLease(`${PREFIX}rate:${kind}:${dimension}:${key}`, rate, burst, tokens, 1).catch(() => {});
  }

  async quotaTake(user: string, period: QuotaPeriod, limits: QuotaLimits, direction: QuotaDirection, want: number, force: boolean): Promise<QuotaGrant> {
    const [granted, up, down] = await this.redis.sgQuotaTake(
      this.quotaKey(period, user),
      `${PREFIX}quota-users:${period.key}`,
      user,
      direction,
      want,
      force ? 1 : 0,
      limits.total,
      limits.upload,
      limits.download,
      period.end + QUOTA_KEEP_MS,
    );
    return { granted, up, down };
  }

  quotaGiveBack(user: string, period: QuotaPeriod, direction: QuotaDirection, bytes: number): void {
    if (this.up && bytes > 0) this.redis.sgQuotaGiveBack(this.quotaKey(period, user), direction, bytes).catch(() => {});
  }

  async quotaUsage(period: QuotaPeriod): Promise<UserUsage[]> {
    const users = (await this.redis.smembers(`${PREFIX}quota-users:${period.key}`)).sort();
    if (users.length === 0) return [];
    const batch = this.redis.multi();
    for (const user of users) batch.hmget(this.quotaKey(period, user), 'up', 'down');
    const answers = (await batch.exec()) ?? [];
    return users.map((user, i) => {
      const [up, down] = (answers[i]?.[1] as Array<string | null> | undefined) ?? [];
      return { user, up: Number(up ?? 0), down: Number(down ?? 0) };
    });
  }

  private quotaKey(period: QuotaPeriod, user: string): string {
    return `${PREFIX}quota:${period.key}:${user}`;
  }

  /** Claims this process holds for `kind` `key` (as it counts them). */
  holds(kind: ClaimKind, key: string): number {
    return this.held.get(this.hashKey(kind, key))?.count ?? 0;
  }

  close(): Promise<void> {
    this.closing ??= this.shut();
    return this.closing;
  }

  private async shut(): Promise<void> {
    clearInterval(this.renewal);
    this.redis.off('ready', this.onReady);
    this.redis.off('close', this.onClose);
    // The other instances drop this one's claims at their next claim, not after claimTtl.
    if (this.up) await this.redis.del(this.aliveKey).catch(() => {});
    this.held.clear();
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => {});
    this.redis.disconnect();
    this.redis.off('error', this.onError);
  }

  private hashKey(kind: ClaimKind, key: string): string {
    return `${PREFIX}sessions:${kind}:${key}`;
  }

  /** Renews this process' alive key and writes its counts again (keys with claims on their way are left for the next round). */
  private renew(): void {
    if (!this.up || this.closing) return;
    const ttl = this.options.claimTtlMs;
    const batch = this.redis.multi();
    batch.set(this.aliveKey, '1', 'PX', ttl);
    for (const [hash, held] of this.held) {
      if (held.pending > 0) continue;
      if (held.count > 0) {
        batch.hset(hash, this.instance, held.count);
        batch.pexpire(hash, ttl);
      } else {
        batch.hdel(hash, this.instance);
        this.held.delete(hash);
      }
    }
    batch.exec().catch(() => {});
  }

  private readonly onReady = (): void => {
    if (this.wasUp || this.warned) this.options.log.warn({ store: 'redis' }, 'the limit store answers again: session caps are shared again');
    this.wasUp = true;
    this.warned = false;
    this.renew();
  };

  private readonly onError = (error: Error): void => {
    this.warnOnce(error.message);
  };

  private readonly onClose = (): void => {
    this.warnOnce('connection closed');
  };

  private warnOnce(reason: string): void {
    if (this.warned || this.closing) return;
    this.warned = true;
    this.outages++;
    this.options.log.warn({ store: 'redis', reason }, 'the limit store is unreachable: each process enforces its own limits until it answers again');
  }
}
