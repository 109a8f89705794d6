import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { ClaimKind, Dimension, LimitStore } from '../policy/store.js';
import { RedisLimitStore } from './redis-store.js';
import { isToPrimary, isToWorker, sendTo, sendToPrimary, type ToPrimary } from './messages.js';

/**
 * limits.store: local, the primary's side: the session claims of every worker of this machine,
 * counted per worker so that a worker that exits gives its claims back at once.
 */
export class LimitHost {
  /** Claims by "kind key", then by worker id. */
  private readonly claims = new Map<string, Map<number, number>>();
  /** The fleet's rate buckets by "kind dimension key". */
  private readonly buckets = new Map<string, FleetBucket>();
  /** Failed logins by address, within their window. */
  private readonly failures = new Map<string, { count: number; until: number }>();
  private readonly sweep: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly now: () => number = Date.now) {
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

  /** Claims held across the workers for `kind` `key` (for tests and the status page). */
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
    this.claims.clear();
    this.buckets.clear();
    this.failures.clear();
  }

  private readonly onMessage = (worker: Worker, message: unknown): void => {
    if (!isToPrimary(message)) return;
    const m = message as ToPrimary;
    if (m.sg === 'limit-claim') {
      const id = `${m.kind} ${m.key}`;
      const granted = m.limit <= 0 || this.held(m.kind, m.key) < m.limit;
      if (granted) {
        let byWorker = this.claims.get(id);
        if (!byWorker) this.claims.set(id, (byWorker = new Map()));
        byWorker.set(worker.id, (byWorker.get(worker.id) ?? 0) + 1);
      }
      sendTo(worker, { sg: 'limit-claimed', seq: m.seq, granted });
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
    } else if (m.sg === 'limit-give-back') {
      this.giveBack(`${m.kind} ${m.dimension} ${m.key}`, m.tokens);
    } else if (m.sg === 'limit-release') {
      const id = `${m.kind} ${m.key}`;
      const byWorker = this.claims.get(id);
      const count = (byWorker?.get(worker.id) ?? 0) - 1;
      if (!byWorker) return;
      if (count > 0) byWorker.set(worker.id, count);
      else byWorker.delete(worker.id);
      if (byWorker.size === 0) this.claims.delete(id);
    }
  };

  // A worker that exits (or is killed) holds nothing any more: its sessions are gone with it.
  private readonly onExit = (worker: Worker): void => {
    for (const [id, byWorker] of this.claims) {
      byWorker.delete(worker.id);
      if (byWorker.size === 0) this.claims.delete(id);
    }
  };
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

// Claims waiting for the primary at most this long (it answers at once unless it is gone).
const ANSWER_TIMEOUT_MS = 5000;

interface Waiter {
  resolve: (answer: number) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  /** Given up on: what it still gets is given back through this. */
  late: ((answer: number) => void) | null;
  readonly giveBack: (answer: number) => void;
}

/** limits.store: local, a worker's side: claims asked of the primary over the cluster channel. */
export class IpcLimitStore implements LimitStore {
  readonly kind = 'local';
  private readonly waiting = new Map<number, Waiter>();
  private seq = 0;
  private closed = false;
  up = true;

  constructor() {
    process.on('message', this.onMessage);
  }

  async claim(kind: ClaimKind, key: string, limit: number): Promise<boolean> {
    const granted = await this.ask((seq) => ({ sg: 'limit-claim', seq, kind, key, limit }), (answer) => {
      if (answer > 0) this.release(kind, key);
    });
    return granted > 0;
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

  /** Sends a request and resolves with its answer; `giveBack` undoes an answer that comes after the timeout. */
  private ask(message: (seq: number) => ToPrimary, giveBack: (answer: number) => void): Promise<number> {
    if (this.closed || !process.connected) return Promise.reject(new Error('the primary process is gone'));
    const seq = ++this.seq;
    return new Promise<number>((resolve, reject) => {
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
    if (!this.closed) sendToPrimary({ sg: 'limit-release', kind, key });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    process.off('message', this.onMessage);
    for (const waiter of this.waiting.values()) {
      clearTimeout(waiter.timer);
      if (!waiter.late) waiter.reject(new Error('the limit store is closed'));
    }
    this.waiting.clear();
  }

  private readonly onMessage = (message: unknown): void => {
    if (!isToWorker(message) || (message.sg !== 'limit-claimed' && message.sg !== 'limit-leased' && message.sg !== 'limit-counted')) return;
    const waiter = this.waiting.get(message.seq);
    if (!waiter) return;
    this.waiting.delete(message.seq);
    clearTimeout(waiter.timer);
    this.up = true;
    const answer = message.sg === 'limit-claimed' ? (message.granted ? 1 : 0) : message.sg === 'limit-leased' ? message.tokens : message.failures;
    if (waiter.late) waiter.late(answer);
    else waiter.resolve(answer);
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
