import { isIP } from 'node:net';
import type { Resolver } from '../dns/resolver.js';
import { unmapAddress as unmapMapped } from 'socksgate-client/protocol';
import { RateTable, SessionCounter, type LeaseSource, type RateBuckets, type RateLimits } from './limits.js';
import type { AuthLockout } from './lockout.js';
import { SharedClaim, StoreStats, type ClaimKind, type Dimension, type LimitStore, type StoreDownMode } from './store.js';
import type { Decision, Policy } from './policy.js';
import { QuotaLedger } from './quota-ledger.js';
import { NO_QUOTAS, describeRefusal, type QuotaAccount, type QuotaRefusal, type QuotaSettings, type QuotaSource } from './quota.js';
import { QuotaBuckets, QuotaTable } from './quota-table.js';
import type { CommandName, PolicyRequest } from './request.js';

/**
 * unmapAddress(), asked several times per session about the same client: an address that does not
 * start with ':' cannot be an IPv4-mapped one, and is returned without looking further.
 */
function unmapAddress(ip: string): string {
  return ip.charCodeAt(0) === 0x3a ? unmapMapped(ip) : ip;
}

/** The limits a reload may change; rates and caps of 0 are unlimited. */
export interface GateLimits {
  readonly sessionsPerClient: number;
  readonly sessionsPerUser: number;
  readonly client: RateLimits;
  readonly user: RateLimits;
  /** Most distinct destinations one UDP association may send to. */
  readonly destinationsPerAssociation: number;
  /** Replies to an association at most ratio × what its client sent, plus burst bytes; ratio 0 for no limit. */
  readonly amplificationRatio: number;
  readonly amplificationBurst: number;
  /** What a session whose claim the fleet's store cannot answer gets (default 'local': this process' own counts decide). */
  readonly storeDown?: StoreDownMode;
}

/** What the gate is told at start and at each reload. */
export interface GateRules {
  readonly policy: Policy;
  readonly limits: GateLimits;
  /** Traffic quotas per user (none when absent). */
  readonly quotas?: QuotaSettings;
}

/** A CONNECT or BIND destination, as the gate answers it. */
export type DestinationVerdict =
  /** Allowed; for a name checked address by address, exactly those addresses (the command uses no others). */
  | { readonly allowed: true; readonly addresses?: string[] }
  | { readonly allowed: false; readonly reason: string; readonly address?: string }
  /** The name could not be resolved. */
  | { readonly allowed: null; readonly error: string };

/** Why a session was refused by a session cap. */
export type OverLimit = 'client address' | 'user';

/** The lease sources of the rate buckets of `kind`: one bucket each in the fleet's store. */
function leasesFrom(store: LimitStore, kind: ClaimKind): (key: string, dimension: Dimension) => LeaseSource {
  return (key, dimension) => ({
    get up() {
      return store.up;
    },
    lease: (rate, burst, want) => store.lease(kind, key, dimension, rate, burst, want),
    giveBack: (rate, burst, tokens) => store.giveBack(kind, key, dimension, rate, burst, tokens),
  });
}

/** Where quotas are counted: the fleet's store, or this process' own ledger (a single process, or tests). */
function quotaSource(store: LimitStore | null): QuotaSource {
  if (store !== null) {
    return {
      get up() {
        return store.up;
      },
      take: (user, period, limits, direction, want, force) => store.quotaTake(user, period, limits, direction, want, force),
      giveBack: (user, period, direction, bytes) => store.quotaGiveBack(user, period, direction, bytes),
      usage: (period) => store.quotaUsage(period),
    };
  }
  const ledger = new QuotaLedger();
  return {
    up: true,
    take: (user, period, limits, direction, want, force) => Promise.resolve(ledger.take(user, period, limits, direction, want, force)),
    giveBack: (user, period, direction, bytes) => ledger.giveBack(user, period, direction, bytes),
    usage: (period) => Promise.resolve(ledger.usage(period)),
  };
}

/** The cap a claim of `kind` counts against, as session logs name it. */
export function overLimit(kind: ClaimKind): OverLimit {
  return kind === 'client' ? 'client address' : 'user';
}

// Shared by every destination allowed without addresses to keep (most of them): no object each.
const ALLOWED: DestinationVerdict = Object.freeze({ allowed: true });
// Shared by every session whose client and user have no rate limits (most of them): no array each.
export const NO_RATES: readonly RateBuckets[] = Object.freeze([]);
// Destinations remembered per memo (oldest forgotten first).
const MAX_DECISIONS = 4096;
// Lookups one memo may wait for at once; more are refused ('busy').
const MAX_WAITING_FOR_DNS = 64;

/**
 * The single gate: every decision of the server passes here. It holds the rules in force, the
 * limits and their counters (sessions per client and per user, rate buckets), the lockout after
 * failed logins, and makes the destination memos that UDP associations and the gateway decide
 * datagrams with. It decides and counts; callers reply, log and close.
 */
export class Gate {
  private rules: GateRules;
  private readonly clientSessions: SessionCounter;
  private readonly userSessions: SessionCounter;
  private readonly clientRates: RateTable;
  private readonly userRates: RateTable;
  /** Traffic quotas of the users with sessions here. */
  readonly quotas: QuotaTable;

  /** Sessions admitted or refused because the store could not answer. */
  readonly storeStats = new StoreStats();
  /** Addresses this process blocked because of failures counted across the fleet. */
  fleetBlocks = 0;

  /** `store`: where the session caps are counted across the fleet (null: this process alone). */
  constructor(
    rules: GateRules,
    readonly resolver: Resolver,
    private readonly lockout: AuthLockout | null,
    readonly store: LimitStore | null = null,
  ) {
    this.rules = rules;
    this.clientSessions = new SessionCounter(rules.limits.sessionsPerClient);
    this.userSessions = new SessionCounter(rules.limits.sessionsPerUser);
    this.clientRates = new RateTable(rules.limits.client, store ? leasesFrom(store, 'client') : null);
    this.userRates = new RateTable(rules.limits.user, store ? leasesFrom(store, 'user') : null);
    this.quotas = new QuotaTable(rules.quotas ?? NO_QUOTAS, quotaSource(store));
  }

  /** New rules and limits (a reload). Live sessions stay counted and keep their buckets' tokens. */
  update(rules: GateRules): void {
    this.rules = rules;
    this.clientSessions.limit = rules.limits.sessionsPerClient;
    this.userSessions.limit = rules.limits.sessionsPerUser;
    this.clientRates.update(rules.limits.client);
    this.userRates.update(rules.limits.user);
    this.quotas.update(rules.quotas ?? NO_QUOTAS);
  }

  /** The rules in force; a memo compares it to know its decisions are still good. */
  get policy(): Policy {
    return this.rules.policy;
  }

  get limits(): GateLimits {
    return this.rules.limits;
  }

  // ---- logins (RFC 1929) ----

  /** Whether `client` is blocked after failed logins (checked at accept when logins are required). */
  blocked(client: string): boolean {
    return this.lockout?.isBlocked(unmapAddress(client)) ?? false;
  }

  /**
   * A login from `client` begins: -1 when the address is blocked (refuse it), else the milliseconds
   * it waits before its check. The attempt is counted as a failure until loginChecked() takes it
   * back, so guesses sent in parallel count at once; `blocksNow` says this attempt blocked the address.
   */
  loginBegins(client: string): { readonly wait: number; readonly blocksNow: boolean } {
    if (this.lockout === null) return { wait: 0, blocksNow: false };
    const address = unmapAddress(client);
    const wait = this.lockout.delayFor(address);
    if (wait < 0) return { wait, blocksNow: false };
    const blocksNow = this.lockout.fail(address);
    // The fleet counts it too; its answer (usually back before the password check ends) may block the address here.
    const lockout = this.lockout;
    this.store?.loginFailed(address, lockout.options.windowMs).then(
      (failures) => {
        if (lockout.fleetFailures(address, failures)) this.fleetBlocks++;
      },
      () => {},
    );
    return { wait, blocksNow };
  }

  /**
   * The password check of a login that began ended: whether the login succeeds. A right password
   * from an address blocked meanwhile still fails: guesses in flight cannot get through.
   */
  loginChecked(client: string, right: boolean): boolean {
    if (this.lockout === null) return right;
    const address = unmapAddress(client);
    if (right) {
      this.lockout.succeed(address);
      this.store?.loginForgiven(address);
    }
    return right && !this.lockout.isBlocked(address);
  }

  // ---- sessions ----

  /**
   * Counts a session of `client` (and `user`) against the caps; its rate buckets (the shared empty
   * list when nothing limits it), or which cap it is over (nothing counted). leave() undoes it.
   */
  enter(client: string, user: string | null): readonly RateBuckets[] | OverLimit {
    const address = unmapAddress(client);
    if (!this.clientSessions.enter(address)) return 'client address';
    if (user !== null && !this.userSessions.enter(user)) {
      this.clientSessions.leave(address);
      return 'user';
    }
    let rates = NO_RATES;
    if (this.clientRates.active) rates = [this.clientRates.acquire(address)];
    if (user !== null && this.userRates.active) rates = [...rates, this.userRates.acquire(user)];
    // A user with a quota: its account rides with the rates, so TCP takes the metered relay.
    const quota = user === null ? null : this.quotas.acquire(user);
    if (quota !== null) rates = [...rates, quota];
    return rates;
  }

  /**
   * After enter() admitted a session: its claims on the caps across the fleet, to start() and
   * release() at its end; null when no store is shared or no cap applies (nothing to wait for).
   * This process' own counts (enter()) stay the bound when the store cannot answer.
   */
  claim(client: string, user: string | null): SharedClaim | null {
    if (this.store === null) return null;
    const { sessionsPerClient, sessionsPerUser, storeDown } = this.rules.limits;
    const wanted: Array<[ClaimKind, string, number]> = [];
    if (sessionsPerClient > 0) wanted.push(['client', unmapAddress(client), sessionsPerClient]);
    if (user !== null && sessionsPerUser > 0) wanted.push(['user', user, sessionsPerUser]);
    if (wanted.length === 0) return null;
    return new SharedClaim(this.store, wanted, storeDown ?? 'local', this.storeStats);
  }

  /** A session that enter() admitted has ended; `rates` is what enter() gave it. */
  leave(client: string, user: string | null, rates: readonly RateBuckets[]): void {
    const address = unmapAddress(client);
    this.clientSessions.leave(address);
    if (user !== null) this.userSessions.leave(user);
    for (const buckets of rates) {
      if (buckets instanceof QuotaBuckets) this.quotas.release(buckets);
      else buckets.table?.release(buckets);
    }
  }

  // ---- quotas ----

  /** The quota account of `user` while it has sessions here (relays spend from it), or null. */
  quotaOf(user: string | null): QuotaAccount | null {
    return this.quotas.get(user);
  }

  /**
   * May a session of `user` (admitted by enter()) start, as far as its quotas go? Waits for the
   * store's first answer about the user on this process (once; nothing after that waits). The
   * refusal names the quota that ran out; with the store down and storeDown: refuse, users with a
   * quota are refused (quota null then).
   */
  async quotaAllows(user: string | null): Promise<QuotaRefusal | 'store-down' | null> {
    const account = this.quotas.get(user);
    if (account === null) return null;
    if (!this.quotas.source.up && (this.rules.limits.storeDown ?? 'local') === 'refuse') {
      this.storeStats.refusals++;
      return 'store-down';
    }
    await account.ready();
    const refusal = account.refusal();
    if (refusal !== null) this.quotas.refusals.set(refusal.user, (this.quotas.refusals.get(refusal.user) ?? 0) + 1);
    return refusal;
  }

  // ---- commands ----

  /**
   * May `client` (as `user`) run `command` to `host`:`port`? A name is checked by its text and, when
   * that cannot decide, by every address it resolves to. The verdict comes at once when the rules
   * decide without DNS (an address, or a name they decide by its text), else once DNS has answered.
   */
  destination(client: string, user: string | null, command: CommandName, host: string, port: number): DestinationVerdict | Promise<DestinationVerdict> {
    const request: PolicyRequest = { client: unmapAddress(client), user, command, host, port, ip: isIP(host) === 0 ? null : unmapAddress(host) };
    const policy = this.rules.policy;
    const first = policy.decide(request);
    if (first) return first.allowed ? ALLOWED : { allowed: false, reason: first.reason };
    return this.destinationByAddresses(policy, request);
  }

  /** destination() for a name the rules decide only by the addresses it resolves to: every one of them. */
  private async destinationByAddresses(policy: Policy, request: PolicyRequest): Promise<DestinationVerdict> {
    let addresses: string[];
    try {
      addresses = (await this.resolver.resolve(request.host)).filter((a) => isIP(a) !== 0);
    } catch (error) {
      return { allowed: null, error: (error as Error).message };
    }
    for (const ip of addresses) {
      const decision = policy.decide({ ...request, ip: unmapAddress(ip) }) ?? { allowed: false, reason: 'undecidable' };
      if (!decision.allowed) return { allowed: false, reason: decision.reason, address: ip };
    }
    return { allowed: true, addresses };
  }

  /** May `client` (as `user`) have a UDP association at all (before any datagram)? */
  associate(client: string, user: string | null): Decision {
    const refusal = this.quotas.get(user)?.refusal() ?? null;
    if (refusal !== null) {
      this.quotas.refusals.set(refusal.user, (this.quotas.refusals.get(refusal.user) ?? 0) + 1);
      return { allowed: false, reason: describeRefusal(refusal) };
    }
    return this.rules.policy.decideAssociate(unmapAddress(client), user);
  }

  /** The memo one association (or gateway egress) decides its datagrams' destinations with; `owner` is told of denials. */
  memo(client: string, user: string | null, owner: MemoOwner): DestinationMemo {
    return new DestinationMemo(this, unmapAddress(client), user, owner);
  }

  /** Whether `bytes` more coming back would pass the amplification limit for an association that has sent `up` and got `down`. */
  amplifies(up: number, down: number, bytes: number): boolean {
    const { amplificationRatio: ratio, amplificationBurst: burst } = this.rules.limits;
    return ratio > 0 && down + bytes > up * ratio + burst;
  }
}

/** Who a memo decides for (an association, a gateway egress): told once per destination the rules deny. */
export interface MemoOwner {
  /** For the log line that names the rule (no closure per memo: the owner implements it). */
  policyDenied(host: string, port: number, ip: string | undefined, reason: string): void;
}

/** A name's verdict: allowed or not, and the address it resolved to (undefined when not looked up). */
export type NameVerdict = (allowed: boolean, ip: string | undefined) => void;

/**
 * Decisions for the destinations of one UDP association (or one gateway egress), remembered while
 * the same rules are in force. The first in two fields, the others in a map made for them: most
 * associations only ever have one destination.
 */
export class DestinationMemo {
  private decidedBy: Policy | null = null;
  private firstKey: string | null = null;
  private firstAllowed = false;
  private more: Map<string, boolean> | null = null;
  private waitingForDns = 0;
  private closed = false;

  constructor(
    private readonly gate: Gate,
    private readonly client: string,
    private readonly user: string | null,
    private readonly owner: MemoOwner,
  ) {}

  /** The rules these decisions were made under (a fast path keyed on it is valid while it is the gate's). */
  get policy(): Policy | null {
    return this.decidedBy;
  }

  /**
   * May datagrams go to `host` (a name or an address) at `ip` (the address it resolved to; null
   * for a name not resolved) and `port`? Null when only an address can decide.
   */
  allows(host: string, ip: string | null, port: number): boolean | null {
    const policy = this.gate.policy;
    if (this.decidedBy !== policy) {
      this.firstKey = null;
      this.more = null;
      this.decidedBy = policy;
    }
    const key = `${host}|${ip ?? ''}|${port}`;
    const known = key === this.firstKey ? this.firstAllowed : this.more?.get(key);
    if (known !== undefined) return known;
    const decision = policy.decide({ client: this.client, user: this.user, command: 'udp', host, port, ip: ip === null ? null : unmapAddress(ip) });
    if (decision === null && ip === null) return null;
    const allowed = decision?.allowed ?? false;
    if (this.firstKey === null) {
      this.firstKey = key;
      this.firstAllowed = allowed;
    } else {
      this.more ??= new Map();
      if (this.more.size >= MAX_DECISIONS) this.more.delete(this.more.keys().next().value as string);
      this.more.set(key, allowed);
    }
    if (!allowed) this.owner.policyDenied(host, port, ip ?? undefined, decision?.reason ?? 'undecidable');
    return allowed;
  }

  /**
   * The verdict for the name `host`: by its text when the rules can tell (and `needAddress` is
   * false), else by the first address it resolves to. `done` runs now when the answer is at hand
   * (returns true), or later once DNS has answered (returns false; not after close()). 'busy': too
   * many lookups wait already; 'dns': the lookup failed (later, through `failed`).
   */
  decideName(host: string, port: number, needAddress: boolean, done: NameVerdict, failed: (reason: 'busy' | 'dns') => void): boolean {
    if (!needAddress) {
      const byName = this.allows(host, null, port);
      if (byName !== null) {
        done(byName, undefined);
        return true;
      }
    }
    const cached = this.gate.resolver.cached(host);
    if (cached !== undefined && cached[0] !== undefined) {
      done(this.allows(host, cached[0], port) ?? false, cached[0]);
      return true;
    }
    if (this.waitingForDns >= MAX_WAITING_FOR_DNS) {
      failed('busy');
      return true;
    }
    this.waitingForDns++;
    this.gate.resolver.resolve(host).then(
      (addresses) => {
        this.waitingForDns--;
        if (this.closed) return;
        const ip = addresses[0];
        if (ip === undefined) return failed('dns');
        done(this.allows(host, ip, port) ?? false, ip);
      },
      () => {
        this.waitingForDns--;
        if (!this.closed) failed('dns');
      },
    );
    return false;
  }

  /** Its owner is gone: answers still on their way are dropped. */
  close(): void {
    this.closed = true;
    this.more = null;
  }
}
