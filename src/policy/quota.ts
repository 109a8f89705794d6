import { RateBuckets, TokenBucket } from './limits.js';
import { DOWN, UP, exhaustedBy, type QuotaDirection, type QuotaGrant, type QuotaLimits, type QuotaName, type QuotaUse, type UserUsage } from './quota-ledger.js';
import { quotaPeriod, type QuotaPeriod, type QuotaPeriodKind } from './quota-period.js';

/** The quotas section of the config, as the gate applies it. */
export interface QuotaSettings {
  readonly period: QuotaPeriodKind;
  readonly timeZone: string;
  readonly onExhausted: 'end' | 'finish';
  readonly total: number;
  readonly upload: number;
  readonly download: number;
  readonly users: Readonly<Record<string, Partial<QuotaLimits>>>;
  /** Most bytes a process takes from the store at a time. */
  readonly chunk: number;
  /** metrics.perUser: per-user series are exported (the table counts them either way). */
  readonly metricsPerUser?: boolean;
}

export const NO_QUOTAS: QuotaSettings = { period: 'month', timeZone: 'UTC', onExhausted: 'end', total: 0, upload: 0, download: 0, users: {}, chunk: 1024 * 1024 };

/** `user`'s quotas (the defaults, replaced field by field by quotas.users), or null when none applies. */
export function limitsFor(settings: QuotaSettings, user: string): QuotaLimits | null {
  const own = settings.users[user];
  const limits = { total: own?.total ?? settings.total, upload: own?.upload ?? settings.upload, download: own?.download ?? settings.download };
  return limits.total > 0 || limits.upload > 0 || limits.download > 0 ? limits : null;
}

/** The chunk for `limits`: the configured one, at most 1/64 of the smallest quota (so the overshoot stays small). */
export function chunkFor(settings: QuotaSettings, limits: QuotaLimits): number {
  const smallest = Math.min(...[limits.total, limits.upload, limits.download].filter((n) => n > 0));
  return Math.max(1, Math.min(settings.chunk, Math.floor(smallest / 64)));
}

/** Where accounts take their bytes: the fleet's store, or this process' own ledger. */
export interface QuotaSource {
  readonly up: boolean;
  take(user: string, period: QuotaPeriod, limits: QuotaLimits, direction: QuotaDirection, want: number, force: boolean): Promise<QuotaGrant>;
  giveBack(user: string, period: QuotaPeriod, direction: QuotaDirection, bytes: number): void;
  usage(period: QuotaPeriod): Promise<UserUsage[]>;
}

/** A live relay of a user's (a TCP pipe, a UDP association) that ends when the quota runs out in `end` mode. */
export interface QuotaWatcher {
  quotaRunOut(): void;
}

/** Why a user's new sessions are refused: the quota that ran out and its period. */
export interface QuotaRefusal {
  readonly user: string;
  readonly quota: QuotaName;
  readonly limit: number;
  readonly period: QuotaPeriodKind;
  readonly periodStart: string;
}

/** A refusal as log lines and replies say it. */
export function describeRefusal(r: QuotaRefusal): string {
  return `quota exhausted: ${r.quota} ${r.limit} bytes per ${r.period} from ${r.periodStart} used up by user ${r.user}`;
}

/**
 * One user's quota in this process: bytes taken from the store in chunks (up to two on hand per
 * direction, the next asked for while one is left), spent by relays without waiting. When the
 * store has no more, the quota has run out: new sessions are refused, and in `end` mode live ones
 * end as they reach it. While the store cannot answer, bytes pass and are owed: written to the store
 * once it answers again (and against the last figures known, this process decides).
 */
export class QuotaAccount {
  /** Sessions using the account; idle sweeps since the last one ended. */
  sessions = 0;
  idle = 0;
  /** Bytes on hand per direction; negative: owed to the store (relayed while it could not answer, or in `finish` mode). */
  private readonly allowance = [0, 0];
  private readonly asking = [false, false];
  /** What the next take of each direction asks for: small at first, doubled while the direction keeps spending. */
  private readonly level = [0, 0];
  /** The quota that ran out, or null. */
  exhausted: QuotaName | null = null;
  /** The period's figures as the store last told them. */
  fleet: QuotaUse = { up: 0, down: 0 };
  private waiters: Array<() => void> = [];
  private readonly watchers = new Set<QuotaWatcher>();
  private first: Promise<void> | null = null;
  private closed = false;
  /** Bytes this process relayed for the user (both periods, for metrics). */
  readonly relayed = [0, 0];

  constructor(
    readonly user: string,
    public limits: QuotaLimits,
    public period: QuotaPeriod,
    private settings: QuotaSettings,
    private readonly source: QuotaSource,
  ) {}

  get chunk(): number {
    return chunkFor(this.settings, this.limits);
  }

  get ends(): boolean {
    return this.settings.onExhausted === 'end';
  }

  /** Resolves once the store told the period's figures (one question): a new session waits for this once. */
  ready(): Promise<void> {
    if (this.first === null) {
      const period = this.period;
      this.first = this.source.take(this.user, period, this.limits, UP, 0, false).then(
        (grant) => {
          if (period.key !== this.period.key) return;
          this.fleet = { up: grant.up, down: grant.down };
          const which = exhaustedBy(this.limits, UP, grant) ?? exhaustedBy(this.limits, DOWN, grant);
          if (which !== null) this.exhaust(which);
        },
        () => {},
      );
    }
    return this.first;
  }

  /** Bytes of `direction` this process can relay now, up to `n` (a TCP chunk is split there). Never waits. */
  take(direction: QuotaDirection, n: number): number {
    const have = this.allowance[direction]!;
    if (have >= n) {
      this.spend(direction, n);
      return n;
    }
    if (this.owes()) {
      this.spend(direction, n);
      this.checkLocally(direction);
      return n;
    }
    const some = Math.max(0, have);
    if (some > 0) this.spend(direction, some);
    else this.ask(direction);
    return some;
  }

  /** All `n` bytes of a datagram or none: false drops it (nothing is taken then). */
  takeAll(direction: QuotaDirection, n: number): boolean {
    if (this.allowance[direction]! >= n || this.owes()) {
      this.spend(direction, n);
      if (this.allowance[direction]! < 0) this.checkLocally(direction);
      return true;
    }
    this.ask(direction, n);
    if (this.exhausted !== null && this.ends) this.runOut();
    return false;
  }

  /**
   * After a short take(): 'wait' (`wake` runs once more bytes came or the store failed) or 'end'
   * (the quota ran out in `end` mode: the relay ends; live relays of the user here end too).
   */
  short(direction: QuotaDirection, wake: () => void): 'wait' | 'end' {
    // Closed under a relay only when the server shuts down: nothing more will come.
    if (this.closed) return 'end';
    if (!this.asking[direction]) this.ask(direction);
    if (this.asking[direction]) {
      this.waiters.push(wake);
      return 'wait';
    }
    if (this.exhausted !== null && this.ends) {
      this.runOut();
      return 'end';
    }
    // The store failed meanwhile (bytes are owed from here) or granted at once: try again.
    queueMicrotask(wake);
    return 'wait';
  }

  watch(watcher: QuotaWatcher): void {
    if (this.ends) this.watchers.add(watcher);
  }

  unwatch(watcher: QuotaWatcher): void {
    this.watchers.delete(watcher);
  }

  /** Why new sessions are refused, or null when they may start. */
  refusal(): QuotaRefusal | null {
    // The fleet has no more of it: what this process still holds is for the relays already running.
    if (this.exhausted === null) return null;
    const limit = this.exhausted === 'total' ? this.limits.total : this.exhausted === 'upload' ? this.limits.upload : this.limits.download;
    return { user: this.user, quota: this.exhausted, limit, period: this.period.kind, periodStart: new Date(this.period.start).toISOString() };
  }

  /** New settings (a reload) or a new period: unused bytes go back, and a changed quota is asked afresh. */
  update(settings: QuotaSettings, limits: QuotaLimits, now: number): void {
    this.settings = settings;
    const period = quotaPeriod(now, settings.period, settings.timeZone);
    const changed = period.key !== this.period.key || JSON.stringify(limits) !== JSON.stringify(this.limits);
    if (!changed) return;
    this.settle();
    this.period = period;
    this.limits = limits;
    this.exhausted = null;
    this.first = null;
  }

  /** Whether the period has ended at `now` (checked at session start and at each take from the store). */
  stale(now: number): boolean {
    return now >= this.period.end;
  }

  /** No session uses it any more: bytes on hand go back, owed ones are written. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.settle();
    this.watchers.clear();
    this.wake();
  }

  // ---- inside ----

  private spend(direction: QuotaDirection, n: number): void {
    this.allowance[direction]! -= n;
    this.relayed[direction]! += n;
    if (this.allowance[direction]! < this.low(direction)) this.ask(direction);
  }

  /** Asked for again below this: half of what the last take asked for. */
  private low(direction: QuotaDirection): number {
    return Math.max(1, Math.floor((this.level[direction] || this.firstWant()) / 2));
  }

  // A direction begins with 1/16 of a chunk: the quiet one (a request's bytes up, say) holds little of the quota.
  private firstWant(): number {
    return Math.max(1, Math.ceil(this.chunk / 16));
  }

  /** Bytes pass without a grant: the store cannot answer (its last figures decide), or `finish` mode after the quota ran out. */
  private owes(): boolean {
    return !this.source.up || (this.exhausted !== null && !this.ends);
  }

  /** While bytes are owed: the quota as this process knows it (the store's last figures plus what it owes). */
  private checkLocally(direction: QuotaDirection): void {
    if (this.exhausted !== null || this.source.up) return;
    const use = { up: this.fleet.up + Math.max(0, -this.allowance[UP]!), down: this.fleet.down + Math.max(0, -this.allowance[DOWN]!) };
    const which = exhaustedBy(this.limits, direction, use);
    if (which !== null) this.exhaust(which);
  }

  private exhaust(which: QuotaName): void {
    this.exhausted = which;
  }

  /** The quota ran out here in `end` mode: every live relay of the user in this process ends. */
  private runOut(): void {
    const watchers = [...this.watchers];
    this.watchers.clear();
    for (const watcher of watchers) watcher.quotaRunOut();
  }

  /** A promise for the take in flight of `direction` (resolved at once when none is). */
  private asked(direction: QuotaDirection): Promise<void> {
    if (!this.asking[direction]) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(() => (this.asking[direction] ? this.asked(direction).then(resolve) : resolve())));
  }

  /**
   * Asks the store for more of `direction` in the background (one take at a time); first pays what
   * is owed. `need`: a datagram that must fit whole (a level below it would never be asked past).
   */
  private ask(direction: QuotaDirection, need = 0): void {
    if (this.asking[direction] || this.closed || !this.source.up) return;
    // A session that runs across midnight: the new period starts here (a take is once per chunk, not per byte).
    const now = Date.now();
    if (this.stale(now)) this.update(this.settings, this.limits, now);
    const have = this.allowance[direction]!;
    const chunk = this.chunk;
    let want: number;
    let force = false;
    if (have < 0) {
      want = -have;
      force = true;
    } else {
      if (have >= Math.max(this.low(direction), need) || (this.exhausted !== null && this.ends)) return;
      const level = Math.max(need, this.level[direction] === 0 ? this.firstWant() : Math.min(2 * chunk, 2 * this.level[direction]!));
      this.level[direction] = level;
      want = level - have;
    }
    const period = this.period;
    this.asking[direction] = true;
    this.source.take(this.user, period, this.limits, direction, want, force).then(
      (grant) => this.granted(direction, period, want, force, grant),
      () => {
        this.asking[direction] = false;
        this.wake();
      },
    );
  }

  private granted(direction: QuotaDirection, period: QuotaPeriod, want: number, force: boolean, grant: QuotaGrant): void {
    this.asking[direction] = false;
    if (this.closed || period.key !== this.period.key) {
      // Asked for a period (or an account) that is over: the bytes go back where they came from.
      if (!force && grant.granted > 0) this.source.giveBack(this.user, period, direction, grant.granted);
      return this.wake();
    }
    this.allowance[direction]! += grant.granted;
    this.fleet = { up: grant.up, down: grant.down };
    if (!force && grant.granted < want) {
      const which = exhaustedBy(this.limits, direction, grant);
      if (which !== null) this.exhaust(which);
    }
    // Owed bytes written: now the real next chunk (or, when that was the last, nothing).
    if (force) this.ask(direction);
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    if (waiters.length === 0) return;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Gives back the bytes on hand and writes the ones owed, for the current period. */
  private settle(): void {
    for (const direction of [UP, DOWN] as QuotaDirection[]) {
      const have = this.allowance[direction]!;
      this.allowance[direction] = 0;
      if (have > 0 && this.source.up) this.source.giveBack(this.user, this.period, direction, have);
      else if (have < 0) this.source.take(this.user, this.period, this.limits, direction, -have, true).catch(() => {});
    }
  }
}

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
