import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { mergeLimitStores, mergeUpstreams, type AdminSource, type Sample, type StatusData } from '../observe/admin.js';
import { isToPrimary, sendTo, type ToPrimary, type ToWorker, type WorkerStatus } from './messages.js';
import { ClaimTable } from './steering.js';

// Each worker's young-generation semi-space cap, in MiB (see the constructor).
const WORKER_SEMI_SPACE_MIB = 2;

interface WorkerState {
  readonly slot: number;
  readonly worker: Worker;
  readonly startedAt: number;
  listening: boolean;
  steer: { port: number; host: string } | null;
}

interface Waiter<T> {
  readonly waitingFor: Set<number>;
  readonly results: T[];
  readonly done: (results: T[]) => void;
  readonly timer: NodeJS.Timeout;
}

export interface WorkerReply {
  /** The worker's slot (1…N) and process ID. */
  readonly worker: number;
  readonly pid: number;
  readonly ok: boolean;
  readonly data?: unknown;
  readonly error?: string;
}

// A claim or a request that a worker does not answer in this time is given up on (the worker is stuck or gone).
const ANSWER_TIMEOUT_MS = 3000;
// A worker that dies this soon after starting is restarted after a growing pause, up to the cap.
const QUICK_DEATH_MS = 5000;
const MAX_RESTART_DELAY_MS = 10_000;

/**
 * The primary process of `--workers N`: forks the workers (which share the TCP listeners, and in
 * fixed-port mode one UDP socket), restarts one that dies (its sessions alone are lost), brokers
 * the fixed-port claims between them, and answers the admin listener for all of them together.
 * It serves no SOCKS traffic itself.
 */
export class Primary {
  private readonly workers = new Map<number, WorkerState>();
  private readonly claims = new ClaimTable();
  private readonly waiters = new Map<number, Waiter<unknown>>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private readonly registry = new Registry();
  private readonly restarts: Counter;
  private seq = 0;
  private stopping = false;
  private restartDelay = 0;

  constructor(
    private readonly count: number,
    private readonly log: Logger,
  ) {
    const workers = this.workers;
    new Gauge({
      name: 'socksgate_workers',
      help: 'Worker processes serving now.',
      registers: [this.registry],
      collect() {
        this.set([...workers.values()].filter((w) => w.listening).length);
      },
    });
    this.restarts = new Counter({ name: 'socksgate_worker_restarts_total', help: 'Workers restarted after they died.', registers: [this.registry] });
    // Workers accept from the shared listener themselves: a third more new sessions per second than the primary
    // accepting and dealing connections out in turn (measured: 1,470 against 970 a second). The kernel's spread is
    // less even (about 42/58 over 3,000 connections); NODE_CLUSTER_SCHED_POLICY=rr chooses the even deal instead.
    cluster.schedulingPolicy = process.env.NODE_CLUSTER_SCHED_POLICY === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    // V8 lets a worker's young generation grow to 16 MiB semi-spaces under a burst of new sessions, and
    // that memory stays (32 MiB and more of RSS per worker). Capped at 2 MiB: the same UDP throughput at
    // 16 associations, and 5.4 instead of 9.7 KiB of memory per idle association with 9,500 open
    // (measured with the benchmark). An operator's own --max-semi-space-size (NODE_OPTIONS, node's arguments) wins.
    const chosen = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((arg) => arg.includes('--max-semi-space-size'));
    cluster.setupPrimary({ execArgv: chosen ? process.execArgv : [...process.execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`] });
  }

  /** Forks the workers; resolves with the listening addresses once all listen, rejects if one fails to start. */
  start(): Promise<Array<{ host: string; port: number }>> {
    return new Promise((resolve, reject) => {
      let started = 0;
      let failed = false;
      const onListening = (state: WorkerState, addresses: Array<{ host: string; port: number }>): void => {
        if (failed || state.listening) return;
        state.listening = true;
        if (++started === this.count) resolve(addresses);
      };
      const onEarlyExit = (state: WorkerState, code: number | null, signal: string | null): boolean => {
        if (started === this.count || failed) return false;
        failed = true;
        reject(new Error(`worker ${state.slot} exited before listening (${signal ?? `code ${code}`}); see its log lines above`));
        return true;
      };
      for (let slot = 1; slot <= this.count; slot++) this.fork(slot, onListening, onEarlyExit);
    });
  }

  /** Every worker listens and the primary is not draining: false while one starts or restarts. */
  ready(): boolean {
    if (this.stopping || this.workers.size < this.count) return false;
    for (const state of this.workers.values()) if (!state.listening) return false;
    return true;
  }

  get workerCount(): number {
    return this.workers.size;
  }

  /** Asks every live worker; resolves with their answers (a worker that does not answer in time is left out). */
  request(what: 'status' | 'sample' | 'reload' | 'metrics'): Promise<WorkerReply[]> {
    const seq = ++this.seq;
    const live = [...this.workers.values()].filter((s) => s.listening && s.worker.isConnected());
    return this.wait<WorkerReply>(seq, live, () => {
      for (const state of live) sendTo(state.worker, { sg: 'request', seq, what });
    });
  }

  /**
   * Tells every worker to drain within `deadlineMs`. Resolves once all of them have stopped
   * accepting; `exited` then resolves when all are gone (a worker that overstays is killed).
   */
  async drain(deadlineMs: number): Promise<{ exited: Promise<void> }> {
    this.stopping = true;
    for (const timer of this.restartTimers) clearTimeout(timer);
    this.restartTimers.clear();
    const states = [...this.workers.values()];
    const exited = Promise.all(
      states.map(
        (state) =>
          new Promise<void>((resolve) => {
            if (state.worker.isDead()) return resolve();
            // A worker that cannot even drain is ended; the grace covers its own closing.
            const kill = setTimeout(() => state.worker.process.kill('SIGKILL'), deadlineMs + 5000);
            state.worker.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
          }),
      ),
    ).then(() => undefined);
    const seq = ++this.seq;
    const live = states.filter((s) => s.worker.isConnected());
    await this.wait(seq, live, () => {
      for (const state of live) sendTo(state.worker, { sg: 'drain', seq, deadlineMs });
    });
    return { exited };
  }

  /** The admin listener's view: metrics summed over the workers, sessions of all of them. */
  adminSource(): AdminSource {
    return {
      ready: () => this.ready(),
      metrics: async () => {
        // Only workers that serve are asked, and one that does not answer in time is left out: the
        // answer has what there is while workers start or restart (socksgate_workers says how many).
        const replies = await this.request('metrics');
        const parts = replies.filter((r) => r.ok).map((r) => r.data as object[]);
        const workers = parts.length > 0 ? await AggregatorRegistry.aggregate(parts).metrics() : '';
        return { type: this.registry.contentType, body: `${workers}\n${await this.registry.metrics()}` };
      },
      sample: async () => {
        const sum: Sample = { t: Date.now() / 1000, forwarded: 0, delivered: 0, forwardedBytes: 0, deliveredBytes: 0 };
        for (const reply of await this.request('sample')) {
          const s = reply.data as Sample;
          sum.forwarded += s.forwarded;
          sum.delivered += s.delivered;
          sum.forwardedBytes += s.forwardedBytes;
          sum.deliveredBytes += s.deliveredBytes;
        }
        return sum;
      },
      status: async () => {
        const merged: StatusData = { ready: this.ready(), sessions: [], totals: {}, drops: {}, workers: [] };
        const replies = await this.request('status');
        for (const reply of replies) {
          const { status: part, claims: table } = reply.data as WorkerStatus;
          const claims = table ? { claims: table } : {};
          merged.workers!.push({ worker: reply.worker, pid: reply.pid, sessions: part.totals.sessions ?? part.sessions.length, ...claims });
          for (const session of part.sessions) merged.sessions.push({ ...session, worker: reply.worker });
          for (const [key, value] of Object.entries(part.totals)) merged.totals[key] = (merged.totals[key] ?? 0) + value;
          for (const [key, value] of Object.entries(part.drops)) merged.drops[key] = (merged.drops[key] ?? 0) + value;
        }
        merged.workers!.sort((a, b) => a.worker - b.worker);
        const upstreams = mergeUpstreams(replies.map((reply) => (reply.data as WorkerStatus).status.upstreams ?? []));
        if (upstreams.length > 0) merged.upstreams = upstreams;
        if (this.claims.size > 0 || merged.workers!.some((w) => w.claims)) merged.claims = this.claims.size;
        const io = replies.map((reply) => (reply.data as WorkerStatus).status.udpIo).find((d) => d !== undefined);
        if (io !== undefined) merged.udpIo = io;
        const store = mergeLimitStores(replies.map((reply) => (reply.data as WorkerStatus).status.limitStore));
        if (store) merged.limitStore = store;
        return merged;
      },
    };
  }

  private fork(
    slot: number,
    onListening?: (state: WorkerState, addresses: Array<{ host: string; port: number }>) => void,
    onEarlyExit?: (state: WorkerState, code: number | null, signal: string | null) => boolean,
  ): void {
    const worker = cluster.fork({ SOCKSGATE_WORKER: String(slot), SOCKSGATE_WORKERS: String(this.count) });
    const state: WorkerState = { slot, worker, startedAt: Date.now(), listening: false, steer: null };
    this.workers.set(worker.id, state);
    worker.on('message', (message: unknown) => {
      if (!isToPrimary(message)) return;
      if (message.sg === 'listening') {
        if (onListening) onListening(state, message.addresses);
        else {
          state.listening = true;
          this.log.info({ worker: slot, workerPid: worker.process.pid }, 'worker restarted and listening');
        }
      } else this.onMessage(state, message);
    });
    worker.on('exit', (code, signal) => this.onExit(state, code, signal, onEarlyExit));
  }

  private onMessage(state: WorkerState, message: ToPrimary): void {
    const id = state.worker.id;
    switch (message.sg) {
      case 'steer-port': {
        state.steer = { port: message.port, host: message.host };
        // The newcomer learns its siblings and every claim so far; the siblings learn the newcomer.
        for (const [other, s] of this.workers) {
          if (other === id || !s.steer) continue;
          sendTo(state.worker, { sg: 'peer', worker: other, port: s.steer.port, host: s.steer.host });
          sendTo(s.worker, { sg: 'peer', worker: id, port: message.port, host: message.host });
        }
        for (const claim of this.claims.entries()) {
          for (let i = 0; i < claim.count; i++) sendTo(state.worker, { sg: 'claim', seq: 0, worker: claim.worker, ip: claim.ip, port: claim.port });
        }
        break;
      }
      case 'claim': {
        const conflict = this.claims.conflict(id, message.ip, message.port);
        if (conflict !== null) {
          sendTo(state.worker, { sg: 'claimed', seq: message.seq, error: `UDP endpoint ${message.ip}:${message.port} already belongs to another association` });
          return;
        }
        this.claims.add(id, message.ip, message.port);
        const seq = ++this.seq;
        const siblings = [...this.workers.entries()].filter(([other, s]) => other !== id && s.steer !== null && s.worker.isConnected()).map(([, s]) => s);
        const broadcast: ToWorker = { sg: 'claim', seq, worker: id, ip: message.ip, port: message.port };
        void this.wait<unknown>(seq, siblings, () => {
          for (const s of siblings) sendTo(s.worker, broadcast);
        }).then(() => sendTo(state.worker, { sg: 'claimed', seq: message.seq }));
        break;
      }
      case 'release':
        this.claims.remove(id, message.ip, message.port);
        for (const [other, s] of this.workers) if (other !== id) sendTo(s.worker, { sg: 'release', worker: id, ip: message.ip, port: message.port });
        break;
      case 'ack':
        this.answer(message.seq, id, undefined);
        break;
      case 'reply':
        this.answer(message.seq, id, { worker: state.slot, pid: state.worker.process.pid ?? 0, ok: message.ok, data: message.data, error: message.error } satisfies WorkerReply);
        break;
      default:
        break;
    }
  }

  private wait<T>(seq: number, from: WorkerState[], send: () => void): Promise<T[]> {
    return new Promise((resolve) => {
      if (from.length === 0) return resolve([]);
      const finish = (results: T[]): void => {
        clearTimeout(waiter.timer);
        this.waiters.delete(seq);
        resolve(results);
      };
      const waiter: Waiter<T> = { waitingFor: new Set(from.map((s) => s.worker.id)), results: [], done: finish, timer: setTimeout(() => finish(waiter.results), ANSWER_TIMEOUT_MS) };
      this.waiters.set(seq, waiter as Waiter<unknown>);
      send();
    });
  }

  private answer(seq: number, worker: number, result: unknown): void {
    const waiter = this.waiters.get(seq);
    if (!waiter || !waiter.waitingFor.delete(worker)) return;
    if (result !== undefined) waiter.results.push(result);
    if (waiter.waitingFor.size === 0) waiter.done(waiter.results);
  }

  private onExit(state: WorkerState, code: number | null, signal: string | null, onEarlyExit?: (state: WorkerState, code: number | null, signal: string | null) => boolean): void {
    const id = state.worker.id;
    this.workers.delete(id);
    this.claims.dropWorker(id);
    for (const s of this.workers.values()) sendTo(s.worker, { sg: 'peer-gone', worker: id });
    // Nobody waits for a dead worker's answer.
    for (const waiter of this.waiters.values()) if (waiter.waitingFor.delete(id) && waiter.waitingFor.size === 0) waiter.done(waiter.results);
    if (this.stopping) return;
    if (!state.listening && onEarlyExit?.(state, code, signal)) return;
    const quick = Date.now() - state.startedAt < QUICK_DEATH_MS;
    this.restartDelay = quick ? Math.min(MAX_RESTART_DELAY_MS, Math.max(100, this.restartDelay * 2)) : 0;
    this.log.warn({ worker: state.slot, workerPid: state.worker.process.pid, code, signal, restartInMs: this.restartDelay }, `worker ${state.slot} exited (${signal ?? `code ${code}`}): its sessions are lost; starting a new one`);
    this.restarts.inc();
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      if (!this.stopping) this.fork(state.slot);
    }, this.restartDelay);
    this.restartTimers.add(timer);
  }
}
