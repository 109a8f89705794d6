/**
 * A token bucket that may go into debt: `reserve(n)` always takes n tokens and says how long the
 * caller should wait before using them, so a chunk larger than the burst is paced, not refused.
 * `take(n)` is the all-or-nothing form for datagrams. A rate of 0 means unlimited.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly burst: number = rate,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
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

  constructor(limits: RateLimits) {
    this.udpPackets = new TokenBucket(limits.udpPacketsPerSecond);
    // At least one maximal datagram fits in the burst, or large datagrams could never pass.
    this.udpBytes = new TokenBucket(limits.udpBytesPerSecond, Math.max(limits.udpBytesPerSecond, 65_535));
    this.tcpBytes = new TokenBucket(limits.tcpBytesPerSecond);
  }

  /** One UDP datagram of `bytes`: both buckets must have room. */
  takeDatagram(bytes: number): boolean {
    if (!this.udpPackets.take(1)) return false;
    return this.udpBytes.take(bytes);
  }
}

/** Buckets by key (client address or user), alive while a session holds them. */
export class RateTable {
  private readonly entries = new Map<string, RateBuckets>();

  constructor(private readonly limits: RateLimits) {}

  /** Whether these limits limit anything at all. */
  get active(): boolean {
    return this.limits.udpPacketsPerSecond > 0 || this.limits.udpBytesPerSecond > 0 || this.limits.tcpBytesPerSecond > 0;
  }

  acquire(key: string): RateBuckets {
    let buckets = this.entries.get(key);
    if (!buckets) this.entries.set(key, (buckets = new RateBuckets(this.limits)));
    buckets.sessions++;
    return buckets;
  }

  release(key: string, buckets: RateBuckets): void {
    if (--buckets.sessions <= 0 && this.entries.get(key) === buckets) this.entries.delete(key);
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
