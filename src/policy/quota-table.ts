import { RateBuckets, TokenBucket } from './limits.js';
import { quotaPeriod } from './quota-period.js';
import { QuotaAccount, limitsFor, type QuotaSettings, type QuotaSource } from './quota.js';

/**
 * The quota as a relay's TCP pipe sees it: a bucket with a rate, so that a session of a user with a
 * quota leaves the native byte mover for the metered relay, as a rate-limited one does. The Throttle
 * recognises it and spends from its account instead of pacing.
 */
export class QuotaBucket extends TokenBucket {
  constructor(readonly account: QuotaAccount) {
    super(1, 1);
  }

  override reserve(): number {
    return 0;
  }

  override debtWait(): number {
    return 0;
  }

  override has(): boolean {
    return true;
  }

  override take(): boolean {
    return true;
  }
}

const NO_RATE_LIMITS = { udpPacketsPerSecond: 0, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 };

/** A user's account among a session's rate buckets (only its tcpBytes does anything). */
export class QuotaBuckets extends RateBuckets {
  override readonly tcpBytes: TokenBucket;

  constructor(readonly account: QuotaAccount) {
    super(NO_RATE_LIMITS);
    this.tcpBytes = new QuotaBucket(account);
  }
}

// An account without sessions gives its bytes back after one to two of these.
const IDLE_SWEEP_MS = 5000;

/** The accounts of users with a quota and live sessions in this process. */
export class QuotaTable {
  private readonly accounts = new Map<string, QuotaAccount>();
  private readonly buckets = new WeakMap<QuotaAccount, QuotaBuckets>();
  private readonly sweep: NodeJS.Timeout;
  /** Sessions refused because a quota ran out (by user, for metrics). */
  readonly refusals = new Map<string, number>();
  /** Bytes relayed [up, down] by accounts closed since start, by user (live ones count their own). */
  private readonly retired = new Map<string, [number, number]>();

  constructor(
    private settings: QuotaSettings,
    readonly source: QuotaSource,
    private readonly now: () => number = Date.now,
  ) {
    this.active = QuotaTable.anyQuota(settings);
    this.sweep = setInterval(() => {
      for (const [user, account] of this.accounts) {
        if (account.sessions > 0 || account.idle++ < 1) continue;
        this.accounts.delete(user);
        this.retire(account);
      }
    }, IDLE_SWEEP_MS);
    this.sweep.unref();
  }

  /** Whether any quota is configured (checked at every session start: kept, not computed). */
  private active: boolean;

  get config(): QuotaSettings {
    return this.settings;
  }

  /** A session of `user` begins: its account (made on first use), or null when no quota applies to it. */
  acquire(user: string): QuotaBuckets | null {
    if (!this.active) return null;
    let account = this.accounts.get(user);
    const now = this.now();
    if (account === undefined) {
      const limits = limitsFor(this.settings, user);
      if (limits === null) return null;
      account = new QuotaAccount(user, limits, quotaPeriod(now, this.settings.period, this.settings.timeZone), this.settings, this.source);
      this.accounts.set(user, account);
      this.buckets.set(account, new QuotaBuckets(account));
      // The first takes start now: the session's quota check (or its first datagrams) find them under way.
      void account.ready();
    } else if (account.stale(now)) {
      account.update(this.settings, account.limits, now);
    }
    account.sessions++;
    account.idle = 0;
    return this.buckets.get(account)!;
  }

  /** A session that acquire() counted has ended. */
  release(buckets: QuotaBuckets): void {
    buckets.account.sessions--;
  }

  /** The live account of `user`, if any. */
  get(user: string | null): QuotaAccount | null {
    return user === null ? null : (this.accounts.get(user) ?? null);
  }

  /** New quotas (a reload): live accounts take them; users whose quota is gone keep counting until their sessions end. */
  update(settings: QuotaSettings): void {
    this.settings = settings;
    this.active = QuotaTable.anyQuota(settings);
    const now = this.now();
    for (const account of this.accounts.values()) account.update(settings, limitsFor(settings, account.user) ?? account.limits, now);
  }

  private static anyQuota(settings: QuotaSettings): boolean {
    return settings.total > 0 || settings.upload > 0 || settings.download > 0 || Object.keys(settings.users).length > 0;
  }

  /** Users with an account here. */
  get size(): number {
    return this.accounts.size;
  }

  values(): IterableIterator<QuotaAccount> {
    return this.accounts.values();
  }

  /** Bytes relayed [up, down] for each user with a quota by this process since it started. */
  relayed(): Map<string, [number, number]> {
    const out = new Map<string, [number, number]>();
    for (const [user, [up, down]] of this.retired) out.set(user, [up, down]);
    for (const account of this.accounts.values()) {
      const before = out.get(account.user) ?? [0, 0];
      out.set(account.user, [before[0] + account.relayed[0]!, before[1] + account.relayed[1]!]);
    }
    return out;
  }

  close(): void {
    clearInterval(this.sweep);
    for (const account of this.accounts.values()) this.retire(account);
    this.accounts.clear();
  }

  private retire(account: QuotaAccount): void {
    account.close();
    const before = this.retired.get(account.user) ?? [0, 0];
    this.retired.set(account.user, [before[0] + account.relayed[0]!, before[1] + account.relayed[1]!]);
  }
}
