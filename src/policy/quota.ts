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
