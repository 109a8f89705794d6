import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { ClaimKind, Dimension, LimitStore } from '../policy/store.js';
import { QuotaLedger, type QuotaDirection, type QuotaGrant, type QuotaLimits, type UserUsage } from '../policy/quota-ledger.js';
import type { QuotaPeriod } from '../policy/quota-period.js';
import { RedisLimitStore } from './redis-store.js';
import { isToPrimary, isToWorker, sendTo, sendToPrimary, type ToPrimary } from './messages.js';

/**
 * limits.store: local, the primary's side. The places (slots) of each session cap are handed to the
 * workers a few at a time: a worker admits sessions on the slots it holds without asking, and asks
 * only when it has none left. The slots handed out never exceed the cap, so the cap is exact; when
 * they are all out, the primary recalls the idle ones from the other workers before it refuses. A
 * worker that exits gives its slots back at once.
 */
export class LimitHost {
  /** Slots handed out by "kind key", then by worker id. */
  private readonly claims = new Map<string, Map<number, number>>();
  /** Recalls in progress by "kind key": the claims waiting for them. */
  private readonly recalls = new Map<string, Recall>();
  private recallSeq = 0;
  /** The fleet's rate buckets by "kind dimension key". */
  private readonly buckets = new Map<string, FleetBucket>();
  /** Failed logins by address, within their window. */
  private readonly failures = new Map<string, { count: number; until: number }>();
  private readonly sweep: NodeJS.Timeout;
  private closed = false;
  /** Traffic quotas of the workers' users (lost when the primary restarts: Redis keeps them). */
  readonly quotas: QuotaLedger;

  constructor(private readonly now: () => number = Date.now) {
    this.quotas = new QuotaLedger(now);
    cluster.on('message', this.onMessage);
    cluster.on('exit', this.onExit);
    // Full buckets are forgotten (a new one starts full, so that changes nothing).
    this.sweep = setInterval(() => {
      const now = this.now();
      for (const [id, bucket] of this.buckets) if (bucket.refill(now) >= bucket.burst) this.buckets.delete(id);
      for (const [address, entry] of this.failures) if (entry.until <= now) this.failures.delete(address);
    }, 10_000);
    this.sweep.unref();
  }

  /** Takes up to `want` tokens of the fleet's bucket `id`. */
  lease(id: string, rate: number, burst: number, want: number): number {
    let bucket = this.buckets.get(id);
    if (!bucket) this.buckets.set(id, (bucket = new FleetBucket(rate, burst, this.now())));
    bucket.rate = rate;
    bucket.burst = burst;
    const granted = Math.max(0, Math.min(want, Math.floor(bucket.refill(this.now()))));
    bucket.tokens -= granted;
    return granted;
  }

  giveBack(id: string, tokens: number): void {
    const bucket = this.buckets.get(id);
    if (bucket) bucket.tokens = Math.min(bucket.burst, bucket.refill(this.now()) + tokens);
  }

  /** Slots held across the workers for `kind` `key` (for tests and the status page). */
  held(kind: ClaimKind, key: string): number {
    let total = 0;
    for (const count of this.claims.get(`${kind} ${key}`)?.values() ?? []) total += count;
    return total;
  }

  /** Keys with claims. */
  get size(): number {
    return this.claims.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    cluster.off('message', this.onMessage);
    cluster.off('exit', this.onExit);
    clearInterval(this.sweep);
    for (const recall of this.recalls.values()) clearTimeout(recall.timer);
    this.recalls.clear();
    this.claims.clear();
    this.buckets.clear();
    this.failures.clear();
  }

  private readonly onMessage = (worker: Worker, message: unknown): void => {
    if (!isToPrimary(message)) return;
    const m = message as ToPrimary;
    if (m.sg === 'limit-claim') {
      const id = `${m.kind} ${m.key}`;
      const claim: WaitingClaim = { worker, seq: m.seq, limit: m.limit };
      const recall = this.recalls.get(id);
      if (recall) recall.waiting.push(claim);
      else if (!this.grant(id, claim)) this.recall(id, m.kind, m.key, claim);
    } else if (m.sg === 'limit-lease') {
      sendTo(worker, { sg: 'limit-leased', seq: m.seq, tokens: this.lease(`${m.kind} ${m.dimension} ${m.key}`, m.rate, m.burst, m.want) });
    } else if (m.sg === 'limit-login-failed') {
      const now = this.now();
      let entry = this.failures.get(m.address);
      if (!entry || entry.until <= now) this.failures.set(m.address, (entry = { count: 0, until: now + m.windowMs }));
      entry.count++;
      sendTo(worker, { sg: 'limit-counted', seq: m.seq, failures: entry.count });
    } else if (m.sg === 'limit-login-forgiven') {
      const entry = this.failures.get(m.address);
      if (entry && entry.count > 0) entry.count--;
    } else if (m.sg === 'limit-quota-take') {
      const grant = this.quotas.take(m.user, m.period, m.limits, m.direction, m.want, m.force);
      sendTo(worker, { sg: 'limit-quota-taken', seq: m.seq, ...grant });
    } else if (m.sg === 'limit-quota-give-back') {
      this.quotas.giveBack(m.user, m.period, m.direction, m.bytes);
    } else if (m.sg === 'limit-quota-usage') {
      sendTo(worker, { sg: 'limit-quota-used', seq: m.seq, users: this.quotas.usage(m.period) });
    } else if (m.sg === 'limit-give-back') {
      this.giveBack(`${m.kind} ${m.dimension} ${m.key}`, m.tokens);
    } else if (m.sg === 'limit-return') {
      const id = `${m.kind} ${m.key}`;
      this.take(id, worker.id, m.slots);
      const recall = this.recalls.get(id);
      if (recall && m.recall === recall.seq) {
        recall.from.delete(worker.id);
        if (recall.from.size === 0) this.endRecall(id);
      }
    }
  };

  /** Hands `claim`'s worker slots of `id` if any are free (a few at once): false when none is. */
  private grant(id: string, claim: WaitingClaim): boolean {
    if (!claim.worker.isConnected()) return true;
    let byWorker = this.claims.get(id);
    let out = 0;
    for (const count of byWorker?.values() ?? []) out += count;
    const free = claim.limit <= 0 ? 1 : claim.limit - out;
    if (free <= 0) return false;
    // A few slots at once, so that a busy client costs one question in several sessions; small enough
    // that the slots idle in workers are few.
    const workers = Math.max(1, Object.keys(cluster.workers ?? {}).length);
    const slots = Math.min(free, Math.max(1, Math.floor(claim.limit / (4 * workers))));
    if (!byWorker) this.claims.set(id, (byWorker = new Map()));
    byWorker.set(claim.worker.id, (byWorker.get(claim.worker.id) ?? 0) + slots);
    sendTo(claim.worker, { sg: 'limit-claimed', seq: claim.seq, slots });
    return true;
  }

  /** Every slot of `id` is out: asks the other workers for their idle ones; `claim` waits for the answers. */
  private recall(id: string, kind: ClaimKind, key: string, claim: WaitingClaim): void {
    const from = new Set<number>();
    const seq = ++this.recallSeq;
    for (const [workerId, count] of this.claims.get(id) ?? []) {
      const other = cluster.workers?.[workerId];
      if (workerId === claim.worker.id || count <= 0 || !other?.isConnected()) continue;
      from.add(workerId);
      sendTo(other, { sg: 'limit-recall', kind, key, recall: seq });
    }
    if (from.size === 0) {
      sendTo(claim.worker, { sg: 'limit-claimed', seq: claim.seq, slots: 0 });
      return;
    }
    // A worker that does not answer (busy, or exiting) keeps its slots; the claims are then decided without them.
    const timer = setTimeout(() => this.endRecall(id), RECALL_TIMEOUT_MS);
    timer.unref();
    this.recalls.set(id, { seq, from, waiting: [claim], timer });
  }

  private endRecall(id: string): void {
    const recall = this.recalls.get(id);
    if (!recall) return;
    this.recalls.delete(id);
    clearTimeout(recall.timer);
    for (const claim of recall.waiting) {
      if (!this.grant(id, claim)) sendTo(claim.worker, { sg: 'limit-claimed', seq: claim.seq, slots: 0 });
    }
  }

  /** `slots` of `id` came back from a worker. */
  private take(id: string, workerId: number, slots: number): void {
    const byWorker = this.claims.get(id);
    if (!byWorker) return;
    const count = (byWorker.get(workerId) ?? 0) - slots;
    if (count > 0) byWorker.set(workerId, count);
    else byWorker.delete(workerId);
    if (byWorker.size === 0) this.claims.delete(id);
  }

  // A worker that exits (or is killed) holds nothing any more: its sessions are gone with it.
  private readonly onExit = (worker: Worker): void => {
    for (const [id, byWorker] of this.claims) {
      byWorker.delete(worker.id);
      if (byWorker.size === 0) this.claims.delete(id);
    }
    for (const [id, recall] of this.recalls) {
      if (recall.from.delete(worker.id) && recall.from.size === 0) this.endRecall(id);
    }
  };
}

// How long a recall waits for the workers' idle slots before the waiting claims are decided without them.
const RECALL_TIMEOUT_MS = 1000;

interface WaitingClaim {
  readonly worker: Worker;
  readonly seq: number;
  readonly limit: number;
}

interface Recall {
  readonly seq: number;
  /** Workers asked and not answered yet. */
  readonly from: Set<number>;
  readonly waiting: WaitingClaim[];
  readonly timer: NodeJS.Timeout;
}

/** One rate bucket of the fleet: refilled at `rate` per second up to `burst`, starting full. */
class FleetBucket {
  constructor(
    public rate: number,
    public burst: number,
    private last: number,
    public tokens = burst,
  ) {}

  /** The tokens there are at `now`. */
  refill(now: number): number {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    return this.tokens;
  }
}

// A key's slots go back to the primary after one to two of these without a session of it.
const IDLE_SLOTS_MS = 5000;

// Claims waiting for the primary at most this long (it answers at once unless it is gone).
const ANSWER_TIMEOUT_MS = 5000;

/** A worker's slots of one key, and the sessions on them. */
interface HeldSlots {
  slots: number;
  used: number;
  idle: number;
}

const CLAIM_KINDS: readonly ClaimKind[] = ['client', 'user'];

interface Waiter {
  resolve: (answer: never) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  /** Given up on: what it still gets is given back through this. */
  late: ((answer: never) => void) | null;
  readonly giveBack: (answer: never) => void;
}

/**
 * limits.store: local, a worker's side. Sessions are admitted on the slots the primary handed this
 * worker; it asks for more only when none is left, gives them all back when its last session of a
 * key ends, and gives the idle ones back when the primary recalls them.
 */
export class IpcLimitStore implements LimitStore {
  readonly kind = 'local';
  /**
   * Slots held and sessions on them, by kind and key; `idle`: the sweeps since the key's last session
   * ended. A map per kind: a key is looked up as it is, with no "kind key" string made per session.
   */
  private readonly slots: Readonly<Record<ClaimKind, Map<string, HeldSlots>>> = { client: new Map(), user: new Map() };
  private readonly waiting = new Map<number, Waiter>();
  /** Gives back the slots of keys with no session for a whole sweep interval. */
  private readonly sweep: NodeJS.Timeout;
  private seq = 0;
  private closed = false;
  up = true;

  constructor() {
    process.on('message', this.onMessage);
    this.sweep = setInterval(() => {
      for (const kind of CLAIM_KINDS) {
        for (const [key, here] of this.slots[kind]) {
          if (here.used > 0 || here.idle++ < 1) continue;
          this.slots[kind].delete(key);
          this.giveSlots(kind, key, here.slots);
        }
      }
    }, IDLE_SLOTS_MS);
    this.sweep.unref();
  }

  claimHeld(kind: ClaimKind, key: string): boolean {
    const here = this.slots[kind].get(key);
    if (here === undefined || here.used >= here.slots) return false;
    here.used++;
    here.idle = 0;
    return true;
  }

  async claim(kind: ClaimKind, key: string, limit: number): Promise<boolean> {
    if (this.claimHeld(kind, key)) return true;
    const got = await this.ask((seq) => ({ sg: 'limit-claim', seq, kind, key, limit }), (slots) => this.giveSlots(kind, key, slots));
    if (got <= 0) return false;
    const now = this.slots[kind].get(key);
    if (now === undefined) this.slots[kind].set(key, { slots: got, used: 1, idle: 0 });
    else {
      now.slots += got;
      now.used++;
      now.idle = 0;
    }
    return true;
  }

  lease(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, want: number): Promise<number> {
    return this.ask((seq) => ({ sg: 'limit-lease', seq, kind, key, dimension, rate, burst, want }), (tokens) => this.giveBack(kind, key, dimension, rate, burst, tokens));
  }

  loginFailed(address: string, windowMs: number): Promise<number> {
    return this.ask((seq) => ({ sg: 'limit-login-failed', seq, address, windowMs }), () => {});
  }

  loginForgiven(address: string): void {
    if (!this.closed) sendToPrimary({ sg: 'limit-login-forgiven', address });
  }

  giveBack(kind: ClaimKind, key: string, dimension: Dimension, rate: number, burst: number, tokens: number): void {
    if (!this.closed && tokens > 0) sendToPrimary({ sg: 'limit-give-back', kind, key, dimension, rate, burst, tokens });
  }

  quotaTake(user: string, period: QuotaPeriod, limits: QuotaLimits, direction: QuotaDirection, want: number, force: boolean): Promise<QuotaGrant> {
    return this.ask<QuotaGrant>(
      (seq) => ({ sg: 'limit-quota-take', seq, user, period, limits, direction, want, force }),
      (grant) => {
        if (!force) this.quotaGiveBack(user, period, direction, grant.granted);
      },
    );
  }

  quotaGiveBack(user: string, period: QuotaPeriod, direction: QuotaDirection, bytes: number): void {
    if (!this.closed && bytes > 0) sendToPrimary({ sg: 'limit-quota-give-back', user, period, direction, bytes });
  }

  quotaUsage(period: QuotaPeriod): Promise<UserUsage[]> {
    return this.ask<UserUsage[]>((seq) => ({ sg: 'limit-quota-usage', seq, period }), () => {});
  }

  /** Sends a request and resolves with its answer; `giveBack` undoes an answer that comes after the timeout. */
  private ask<T = number>(message: (seq: number) => ToPrimary, giveBack: (answer: T) => void): Promise<T> {
    if (this.closed || !process.connected) return Promise.reject(new Error('the primary process is gone'));
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        late: null,
        giveBack,
        timer: setTimeout(() => {
          waiter.late = giveBack;
          this.up = false;
          reject(new Error('the primary did not answer'));
        }, ANSWER_TIMEOUT_MS),
      };
      this.waiting.set(seq, waiter);
      sendToPrimary(message(seq));
    });
  }

  release(kind: ClaimKind, key: string): void {
    const here = this.slots[kind].get(key);
    // Idle slots stay a while: a client's next session (most are short and follow each other) needs
    // no question; the sweep gives them back, and the primary recalls them when another worker needs them.
    if (here !== undefined && here.used > 0) here.used--;
  }

  private giveSlots(kind: ClaimKind, key: string, slots: number, recall?: number): void {
    if (!this.closed && process.connected && (slots > 0 || recall !== undefined)) sendToPrimary({ sg: 'limit-return', kind, key, slots, ...(recall === undefined ? {} : { recall }) });
  }

  /** The primary needs the idle slots of `kind` `key` for another worker. */
  private recalled(kind: ClaimKind, key: string, recall: number): void {
    // The kind comes over the channel: one this process does not know holds nothing, and the recall is still answered.
    const here = this.slots[kind]?.get(key);
    const idle = here === undefined ? 0 : here.slots - here.used;
    if (here !== undefined) here.slots = here.used;
    if (here !== undefined && here.used === 0) this.slots[kind].delete(key);
    this.giveSlots(kind, key, idle, recall);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweep);
    for (const kind of CLAIM_KINDS) this.slots[kind].clear();
    process.off('message', this.onMessage);
    for (const waiter of this.waiting.values()) {
      clearTimeout(waiter.timer);
      if (!waiter.late) waiter.reject(new Error('the limit store is closed'));
    }
    this.waiting.clear();
  }

  private readonly onMessage = (message: unknown): void => {
    if (!isToWorker(message)) return;
    if (message.sg === 'limit-recall') return this.recalled(message.kind, message.key, message.recall);
    if (message.sg !== 'limit-claimed' && message.sg !== 'limit-leased' && message.sg !== 'limit-counted' && message.sg !== 'limit-quota-taken' && message.sg !== 'limit-quota-used') return;
    const waiter = this.waiting.get(message.seq);
    if (!waiter) return;
    this.waiting.delete(message.seq);
    clearTimeout(waiter.timer);
    this.up = true;
    let answer: unknown;
    if (message.sg === 'limit-claimed') answer = message.slots;
    else if (message.sg === 'limit-leased') answer = message.tokens;
    else if (message.sg === 'limit-counted') answer = message.failures;
    else if (message.sg === 'limit-quota-taken') answer = { granted: message.granted, up: message.up, down: message.down };
    else answer = message.users;
    if (waiter.late) waiter.late(answer as never);
    else waiter.resolve(answer as never);
  };
}

/**
 * The store a serving process counts its session caps in: for `local`, the primary when the process
 * is one of several workers (none when it serves alone: its own counts are exact); for a Redis URL,
 * a connection of its own (not waited for: until it answers, the gate falls back).
 */
export async function openLimitStore(limits: { store: string; claimTtl: number }, inWorker: boolean, log: Logger): Promise<LimitStore | null> {
  if (limits.store === 'local') return inWorker ? new IpcLimitStore() : null;
  const store = new RedisLimitStore(limits.store, { claimTtlMs: limits.claimTtl * 1000, log });
  await store.open();
  return store;
}
