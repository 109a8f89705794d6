/** What a session claim counts against: the sessions of one client address or of one user. */
export type ClaimKind = 'client' | 'user';

import type { QuotaDirection, QuotaGrant, QuotaLimits, UserUsage } from './quota-ledger.js';
import type { QuotaPeriod } from './quota-period.js';

/** The rate a lease draws from (limits.client.* / limits.user.*). */
export type Dimension = 'udpPackets' | 'udpBytes' | 'tcpBytes';

/**
 * Where the limits of a fleet are counted: the primary of one machine (for its workers) or Redis
 * (for many instances). Session claims wait for one answer of the store at session start; nothing
 * on a datagram's or a chunk's path ever waits for it.
 */
export interface LimitStore {
  /** 'local' (the primary, over the cluster channel) or 'redis'. */
  readonly kind: 'local' | 'redis';
  /**
   * Claims one session of `key` against `limit` (> 0) across the fleet: true when admitted, false
   * when the fleet holds `limit` already. Rejects when the store cannot answer (it is down or slow).
   */
  claim(kind: ClaimKind, key: string, limit: number): Promise<boolean>;
  /**
   * claim() when it needs no answer from anyone: true when the session is admitted on what this
   * process holds already (counted, as claim() would), false when claim() must ask. Optional.
   */
  claimHeld?(kind: ClaimKind, key: string): boolean;
  /** Gives back a claim that claim() granted. Never throws; a store that is down settles it later. */
  release(kind: ClaimKind, key: string): void;
  /**
   * Takes up to `want` tokens of the fleet's bucket for `kind` `key` `dimension` (refilled at `rate`
   * per second up to `burst`): how many it got (0 when the bucket is empty). Rejects when the store
   * cannot answer.
   */
  lease(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, want: number): Promise<number>;
  /**
   * Counts one failed login of `address` across the fleet (failures older than `windowMs` are
   * forgotten): the fleet's count within the window, this one included. Rejects when the store cannot answer.
   */
  loginFailed(address: string, windowMs: number): Promise<number>;
  /** Takes back a failure that loginFailed() counted in advance (the password was right). Never throws. */
  loginForgiven(address: string): void;
  /** Puts back tokens a lease got and nobody used. Never throws. */
  giveBack(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, tokens: number): void;
  /**
   * Takes up to `want` bytes of `user`'s quota for `period` in `direction` (`force`: all of them,
   * bytes already relayed): what was granted and the period's figures. Rejects when the store cannot answer.
   */
  quotaTake(user: string, period: QuotaPeriod, limits: QuotaLimits, direction: QuotaDirection, want: number, force: boolean): Promise<QuotaGrant>;
  /** Puts back bytes a quota take got and nobody used. Never throws. */
  quotaGiveBack(user: string, period: QuotaPeriod, direction: QuotaDirection, bytes: number): void;
  /** Every user's figures for `period` (bytes handed out, so including what processes hold unused). */
  quotaUsage(period: QuotaPeriod): Promise<UserUsage[]>;
  /** Whether the store answered the last time it was asked (false: the process counts on its own). */
  readonly up: boolean;
  /** Releases every connection and timer of the store; its claims go with it. Idempotent. */
  close(): Promise<void>;
}

/** What a process does with a session when the store cannot answer its claim. */
export type StoreDownMode = 'local' | 'refuse';

/** Counters of a store's use, as metrics export them. */
export class StoreStats {
  /** Sessions admitted by this process' own counts because the store could not answer. */
  fallbacks = 0;
  /** Sessions refused because the store could not answer (storeDown: refuse). */
  refusals = 0;
}

/**
 * The claims of one session in the shared store (one per cap that applies). start() claims them in
 * turn and says which cap is over; release() gives back what was granted, also claims still on
 * their way (they are given back when granted). One owner: the session.
 */
export class SharedClaim {
  private held: Array<[ClaimKind, string]> = [];
  private released = false;

  constructor(
    private readonly store: LimitStore,
    private readonly wanted: ReadonlyArray<readonly [ClaimKind, string, number]>,
    private readonly onDown: StoreDownMode,
    private readonly stats: StoreStats,
  ) {}

  /**
   * start(), at once when the store grants every cap without asking (claimHeld()): null then, else
   * the promise of start()'s answer.
   */
  begin(): null | Promise<ClaimKind | null> {
    const wanted = this.wanted;
    for (let i = 0; i < wanted.length; i++) {
      const [kind, key] = wanted[i]!;
      if (this.store.claimHeld?.(kind, key) !== true) return this.start(i);
      this.held.push([kind, key]);
    }
    return null;
  }

  /**
   * Claims every cap (from the `from`th on): null when all admit the session, else the kind of the
   * first over its limit (nothing held then).
   */
  async start(from = 0): Promise<ClaimKind | null> {
    for (let i = from; i < this.wanted.length; i++) {
      const [kind, key, limit] = this.wanted[i]!;
      let granted: boolean;
      try {
        granted = await this.store.claim(kind, key, limit);
      } catch {
        // The process' own counts decided already (the gate's enter()); the store is not asked again for this session.
        if (this.onDown === 'refuse') {
          this.stats.refusals++;
          this.release();
          return kind;
        }
        this.stats.fallbacks++;
        continue;
      }
      if (this.released) {
        if (granted) this.store.release(kind, key);
        return null;
      }
      if (!granted) {
        this.release();
        return kind;
      }
      this.held.push([kind, key]);
    }
    return null;
  }

  /** Gives back every claim granted (and those still on their way, once granted). Idempotent. */
  release(): void {
    this.released = true;
    const held = this.held;
    if (held.length === 0) return;
    // A new list rather than emptying this one (setting an array's length is a slow path).
    this.held = [];
    for (let i = 0; i < held.length; i++) this.store.release(held[i]![0], held[i]![1]);
  }
}
