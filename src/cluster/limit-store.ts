import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { ClaimKind, LimitStore } from '../policy/store.js';
import { RedisLimitStore } from './redis-store.js';
import { isToPrimary, isToWorker, sendTo, sendToPrimary, type ToPrimary } from './messages.js';

/**
 * limits.store: local, the primary's side: the session claims of every worker of this machine,
 * counted per worker so that a worker that exits gives its claims back at once.
 */
export class LimitHost {
  /** Claims by "kind key", then by worker id. */
  private readonly claims = new Map<string, Map<number, number>>();
  private closed = false;

  constructor() {
    cluster.on('message', this.onMessage);
    cluster.on('exit', this.onExit);
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
    this.claims.clear();
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

// Claims waiting for the primary at most this long (it answers at once unless it is gone).
const ANSWER_TIMEOUT_MS = 5000;

interface Waiter {
  readonly kind: ClaimKind;
  readonly key: string;
  resolve: (granted: boolean) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  /** Given up on: a grant that still comes is given back. */
  late: boolean;
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

  claim(kind: ClaimKind, key: string, limit: number): Promise<boolean> {
    if (this.closed || !process.connected) return Promise.reject(new Error('the primary process is gone'));
    const seq = ++this.seq;
    return new Promise<boolean>((resolve, reject) => {
      const waiter: Waiter = { kind, key, resolve, reject, late: false, timer: setTimeout(() => {
        waiter.late = true;
        this.up = false;
        reject(new Error('the primary did not answer a session claim'));
      }, ANSWER_TIMEOUT_MS) };
      this.waiting.set(seq, waiter);
      sendToPrimary({ sg: 'limit-claim', seq, kind, key, limit });
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
    if (!isToWorker(message) || message.sg !== 'limit-claimed') return;
    const waiter = this.waiting.get(message.seq);
    if (!waiter) return;
    this.waiting.delete(message.seq);
    clearTimeout(waiter.timer);
    this.up = true;
    if (!waiter.late) waiter.resolve(message.granted);
    else if (message.granted) this.release(waiter.kind, waiter.key);
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
