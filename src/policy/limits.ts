/**
 * A token bucket that may go into debt: `reserve(n)` always takes n tokens and says how long the
 * caller should wait before using them, so a chunk larger than the burst is paced, not refused.
 * `take(n)` is the all-or-nothing form for datagrams. A rate of 0 means unlimited.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    public rate: number,
    public burst: number = rate,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** New rate and burst (a reload); the tokens on hand carry over, capped by the new burst. */
  set(rate: number, burst: number): void {
    this.refill();
    this.rate = rate;
    this.burst = burst;
    this.tokens = Math.min(this.tokens, burst);
  }

  /** Whether `n` tokens are there now (nothing is taken). */
  has(n: number): boolean {
    if (this.rate <= 0) return true;
    this.refill();
    return this.tokens >= n;
  }

  private refill(): void {
    const now = this.now();
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
  }

  /** Takes `n` tokens if there are that many; false (nothing taken) otherwise. */
  take(n: number): boolean {
    if (this.rate <= 0) return true;
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Takes `n` tokens and returns the milliseconds to wait until they are really there (0: now). */
  reserve(n: number): number {
    if (this.rate <= 0) return 0;
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

/** Rates for one client address or one user; 0 is unlimited. */
export interface RateLimits {
  readonly udpPacketsPerSecond: number;
  readonly udpBytesPerSecond: number;
  readonly tcpBytesPerSecond: number;
}

/** The buckets of one client or user, shared by all of its sessions. */
export class RateBuckets {
  readonly udpPackets: TokenBucket;
  readonly udpBytes: TokenBucket;
  readonly tcpBytes: TokenBucket;
  /** Sessions using these buckets now. */
  sessions = 0;

  /** `table` holds these buckets under `key` while sessions use them. */
  constructor(
    limits: RateLimits,
    readonly table: RateTable | null = null,
    readonly key = '',
  ) {
    const [packets, bytes, tcp] = RateBuckets.shapes(limits);
    this.udpPackets = new TokenBucket(...packets);
    this.udpBytes = new TokenBucket(...bytes);
    this.tcpBytes = new TokenBucket(...tcp);
  }

  // Bursts hold at least one datagram (and one maximal datagram), or nothing could ever pass.
  private static shapes(limits: RateLimits): [[number, number], [number, number], [number, number]] {
    return [
      [limits.udpPacketsPerSecond, Math.max(limits.udpPacketsPerSecond, 1)],
      [limits.udpBytesPerSecond, Math.max(limits.udpBytesPerSecond, 65_535)],
      [limits.tcpBytesPerSecond, limits.tcpBytesPerSecond],
    ];
  }

  /** New limits for live buckets (a reload). */
  apply(limits: RateLimits): void {
    const [packets, bytes, tcp] = RateBuckets.shapes(limits);
    this.udpPackets.set(...packets);
    this.udpBytes.set(...bytes);
    this.tcpBytes.set(...tcp);
  }

  /** Whether a UDP datagram of `bytes` fits both buckets now. */
  canTakeDatagram(bytes: number): boolean {
    return this.udpPackets.has(1) && this.udpBytes.has(bytes);
  }

  /** One UDP datagram of `bytes`: both buckets must have room; nothing is taken otherwise. */
  takeDatagram(bytes: number): boolean {
    if (!this.canTakeDatagram(bytes)) return false;
    this.udpPackets.take(1);
    this.udpBytes.take(bytes);
    return true;
  }
}

/** A datagram against several sets of buckets (client and user): all must have room, or none is charged. */
export function takeDatagramFromAll(all: readonly RateBuckets[], bytes: number): boolean {
  for (const buckets of all) if (!buckets.canTakeDatagram(bytes)) return false;
  for (const buckets of all) buckets.takeDatagram(bytes);
  return true;
}

/** Buckets by key (client address or user), alive while a session holds them. */
export class RateTable {
  private readonly entries = new Map<string, RateBuckets>();

  constructor(private limits: RateLimits) {}

  /** New limits (a reload): live buckets keep their tokens, so a reload grants no fresh burst. */
  update(limits: RateLimits): void {
    this.limits = limits;
    for (const buckets of this.entries.values()) buckets.apply(limits);
  }

  /** Whether these limits limit anything at all. */
  get active(): boolean {
    return this.limits.udpPacketsPerSecond > 0 || this.limits.udpBytesPerSecond > 0 || this.limits.tcpBytesPerSecond > 0;
  }

  acquire(key: string): RateBuckets {
    let buckets = this.entries.get(key);
    if (!buckets) this.entries.set(key, (buckets = new RateBuckets(this.limits, this, key)));
    buckets.sessions++;
    return buckets;
  }

  /** A session is done with `buckets` (from acquire()); they go when the last one is. */
  release(buckets: RateBuckets): void {
    if (--buckets.sessions <= 0 && this.entries.get(buckets.key) === buckets) this.entries.delete(buckets.key);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Concurrent sessions by key, against a cap (0: no cap). */
export class SessionCounter {
  private readonly counts = new Map<string, number>();

  constructor(public limit: number) {}

  /** Counts one more session for `key`; false (nothing counted) when that would pass the cap. */
  enter(key: string): boolean {
    const count = this.counts.get(key) ?? 0;
    if (this.limit > 0 && count >= this.limit) return false;
    this.counts.set(key, count + 1);
    return true;
  }

  leave(key: string): void {
    const count = (this.counts.get(key) ?? 0) - 1;
    if (count <= 0) this.counts.delete(key);
    else this.counts.set(key, count);
  }

  get size(): number {
    return this.counts.size;
  }
}
