import type { Dimension } from './store.js';

/**
 * A token bucket that may go into debt: `reserve(n)` always takes n tokens and says how long the
 * caller should wait before using them, so a chunk larger than the burst is paced, not refused.
 * `take(n)` is the all-or-nothing form for datagrams. A rate of 0 means unlimited.
 */
export class TokenBucket {
  protected tokens: number;
  protected last: number;

  constructor(
    public rate: number,
    public burst: number = rate,
    protected readonly now: () => number = Date.now,
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

  protected refill(): void {
    const now = this.now();
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
  }

  /** Takes `n` tokens that has(n) has just found (no refill, no second check). */
  charge(n: number): void {
    if (this.rate > 0) this.tokens -= n;
  }

  /** Takes `n` tokens if there are that many; false (nothing taken) otherwise. */
  take(n: number): boolean {
    if (this.rate <= 0) return true;
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /**
   * Milliseconds until the debt that reserve() ran up is paid, if tokens keep coming at the full rate
   * (0: no debt). A caller that waited for reserve() checks this again: a leased bucket's tokens come
   * only as fast as the fleet grants them, so its debt may still be there.
   */
  debtWait(): number {
    if (this.rate <= 0) return 0;
    this.refill();
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }

  /** Takes `n` tokens and returns the milliseconds to wait until they are really there (0: now). */
  reserve(n: number): number {
    if (this.rate <= 0) return 0;
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}

/** Where a leased bucket gets its tokens: one bucket of the fleet's store. */
export interface LeaseSource {
  /** Whether the store answers; while it does not, the bucket refills on its own at the full rate. */
  readonly up: boolean;
  lease(rate: number, burst: number, want: number): Promise<number>;
  giveBack(rate: number, burst: number, tokens: number): void;
}

// A lease asks for this share of a second's rate at a time (and keeps up to two such chunks on hand).
const CHUNK_SECONDS = 0.1;

/**
 * A token bucket whose tokens come from the fleet's bucket in the store, in chunks of a tenth of a
 * second of the rate: take() and reserve() never wait for the store; when less than one chunk is on
 * hand the bucket asks in the background for enough to hold two (one request at a time, and after a
 * short answer not before the store can have refilled a chunk), so a steady flow costs the store one
 * request per chunk used. close() gives back what is left. While the store does not answer, it
 * refills itself at the full rate: the process' own limit.
 */
export class LeasedBucket extends TokenBucket {
  private asking = false;
  private notBefore = 0;
  /** The largest take() that found too few tokens since the last lease (a datagram larger than two chunks). */
  private need = 0;
  private closed = false;

  constructor(
    rate: number,
    burst: number,
    private readonly source: LeaseSource,
    now: () => number = Date.now,
  ) {
    super(rate, burst, now);
    this.tokens = 0;
    this.refill();
  }

  override take(n: number): boolean {
    if (super.take(n)) return true;
    if (this.rate > 0 && n > this.need) {
      this.need = n;
      this.refill();
    }
    return false;
  }

  override has(n: number): boolean {
    if (super.has(n)) return true;
    if (this.rate > 0 && n > this.need) {
      this.need = n;
      this.refill();
    }
    return false;
  }

  /** No session uses the bucket any more: unused tokens go back to the fleet. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const left = Math.floor(this.tokens);
    this.tokens = 0;
    if (left > 0 && this.rate > 0 && this.source.up) this.source.giveBack(this.rate, this.burst, left);
  }

  protected override refill(): void {
    if (this.rate <= 0 || this.closed) return;
    if (!this.source.up) return super.refill();
    const now = this.now();
    this.last = now;
    const chunk = Math.max(1, Math.ceil(this.rate * CHUNK_SECONDS));
    const target = Math.max(2 * chunk, this.need);
    if (this.asking || this.tokens >= Math.max(chunk, this.need) || now < this.notBefore) return;
    const want = Math.ceil(target - this.tokens);
    this.asking = true;
    this.source.lease(this.rate, this.burst, want).then(
      (granted) => this.granted(granted, want, chunk),
      () => {
        this.asking = false;
      },
    );
  }

  private granted(granted: number, want: number, chunk: number): void {
    this.asking = false;
    if (this.closed) {
      if (granted > 0) this.source.giveBack(this.rate, this.burst, granted);
      return;
    }
    this.tokens += granted;
    if (this.tokens >= this.need) this.need = 0;

    // The fleet's bucket ran dry: ask again once it can have refilled a chunk, not at every datagram.
    if (granted < want) this.notBefore = this.now() + (Math.min(chunk, want - granted) * 1000) / this.rate;
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

  /** `table` holds these buckets under `key` while sessions use them; `leases`: their tokens come from the fleet's store. */
  constructor(
    limits: RateLimits,
    readonly table: RateTable | null = null,
    readonly key = '',
    leases: ((dimension: Dimension) => LeaseSource) | null = null,
  ) {
    const [packets, bytes, tcp] = RateBuckets.shapes(limits);
    const bucket = (dimension: Dimension, [rate, burst]: [number, number]): TokenBucket => (leases ? new LeasedBucket(rate, burst, leases(dimension)) : new TokenBucket(rate, burst));
    this.udpPackets = bucket('udpPackets', packets);
    this.udpBytes = bucket('udpBytes', bytes);
    this.tcpBytes = bucket('tcpBytes', tcp);
  }

  /** The last session is gone: leased tokens go back to the fleet. */
  close(): void {
    for (const bucket of [this.udpPackets, this.udpBytes, this.tcpBytes]) if (bucket instanceof LeasedBucket) bucket.close();
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
  for (const buckets of all) {
    buckets.udpPackets.charge(1);
    buckets.udpBytes.charge(bytes);
  }
  return true;
}

/** Buckets by key (client address or user), alive while a session holds them. */
export class RateTable {
  private readonly entries = new Map<string, RateBuckets>();

  /** `leases`: where the buckets of a key lease their tokens (the fleet's store); null: each process on its own. */
  constructor(
    private limits: RateLimits,
    private readonly leases: ((key: string, dimension: Dimension) => LeaseSource) | null = null,
  ) {}

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
    if (!buckets) {
      const leases = this.leases;
      buckets = new RateBuckets(this.limits, this, key, leases ? (dimension) => leases(key, dimension) : null);
      this.entries.set(key, buckets);
    }
    buckets.sessions++;
    return buckets;
  }

  /** A session is done with `buckets` (from acquire()); they go when the last one is. */
  release(buckets: RateBuckets): void {
    if (--buckets.sessions <= 0 && this.entries.get(buckets.key) === buckets) {
      this.entries.delete(buckets.key);
      buckets.close();
    }
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
