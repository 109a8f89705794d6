import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { SocksServer, type LimitStoreState, type UpstreamSnapshot } from '../server/server.js';
import { createMetrics } from './metrics.js';
import { STATUS_PAGE } from './status-page.js';
import { udpIo } from '../native/addon.js';
import { usageReport, type UsageReport } from './usage.js';

/** Running totals the status page charts. */
export interface Sample {
  t: number;
  forwarded: number;
  delivered: number;
  forwardedBytes: number;
  deliveredBytes: number;
}

/** The status page's data, less its history. */
/** A worker's fixed-port claim table: its siblings' claims it knows of, and its own still unacknowledged. */
export interface ClaimCounts {
  known: number;
  pending: number;
}

export interface StatusData {
  ready: boolean;
  sessions: Array<Record<string, unknown>>;
  totals: Record<string, number>;
  drops: Record<string, number>;
  /** With workers: each one's slot, process ID and sessions. */
  workers?: Array<{ worker: number; pid: number; sessions: number; claims?: ClaimCounts }>;
  /** Fixed-port mode with workers: the primary's claim table (each worker's is in `workers`). */
  claims?: number;
  /** Gateway mode: each upstream's state. */
  upstreams?: UpstreamSnapshot[];
  /** The relay sockets' UDP I/O: the native helper's batches, or dgram (and why). */
  udpIo?: string;
  /** limits.store where one is shared: its kind, whether it answers (every worker's), sessions it could not answer for. */
  limitStore?: LimitStoreState;
}

/** The limit store as several workers see it: up only where every one reaches it, fallbacks summed. */
export function mergeLimitStores(parts: ReadonlyArray<LimitStoreState | undefined>): LimitStoreState | undefined {
  let merged: LimitStoreState | undefined;
  for (const part of parts) {
    if (!part) continue;
    merged = merged ? { kind: merged.kind, up: merged.up && part.up, fallbacks: merged.fallbacks + part.fallbacks, refusals: merged.refusals + part.refusals } : { ...part };
  }
  return merged;
}

/**
 * Upstream states of several workers as one: up only where every worker has it up, sessions and
 * failures summed, the slowest last health check.
 */
export function mergeUpstreams(parts: ReadonlyArray<readonly UpstreamSnapshot[]>): UpstreamSnapshot[] {
  const merged = new Map<string, UpstreamSnapshot>();
  for (const part of parts) {
    for (const u of part) {
      const m = merged.get(u.upstream);
      if (!m) {
        merged.set(u.upstream, { ...u, failures: { ...u.failures } });
        continue;
      }
      const slowest = m.healthCheckSeconds === null ? u.healthCheckSeconds : u.healthCheckSeconds === null ? m.healthCheckSeconds : Math.max(m.healthCheckSeconds, u.healthCheckSeconds);
      merged.set(u.upstream, {
        upstream: u.upstream,
        up: m.up && u.up,
        sessionsActive: m.sessionsActive + u.sessionsActive,
        sessionsTotal: m.sessionsTotal + u.sessionsTotal,
        failures: { 'health-check': m.failures['health-check'] + u.failures['health-check'], dial: m.failures.dial + u.failures.dial },
        healthCheckSeconds: slowest,
      });
    }
  }
  return [...merged.values()];
}

/** What the admin listener reports on: one server, or (in the primary) every worker's together. */
export interface AdminSource {
  ready(): boolean;
  metrics(): Promise<{ type: string; body: string }>;
  sample(): Promise<Sample>;
  status(): Promise<StatusData>;
  /** Traffic quotas: every user's usage this period (GET /users/usage). */
  usage?(): Promise<UsageReport>;
}

// One sample a second, five minutes of them, for the status page's charts.
const HISTORY = 300;

/** The figures of one server in this process. */
export function localStatus(server: SocksServer): StatusData {
  server.sampleKernelDrops();
  const udp = server.udpStats;
  const tcp = server.stats;
  return {
    ready: server.ready,
    sessions: server.snapshot() as unknown as Array<Record<string, unknown>>,
    totals: {
      sessions: server.sessionCount,
      associations: udp.activeAssociations,
      clientDatagrams: udp.clientDatagrams,
      clientBytes: udp.clientBytes,
      deliveredDatagrams: udp.deliveredDatagrams,
      deliveredBytes: udp.deliveredBytes,
      steeredDatagrams: udp.steeredDatagrams,
      dropped: udp.droppedTotal,
      authFailures: tcp.authFailures,
      denied: tcp.denied,
    },
    drops: { ...udp.drops },
    ...(server.upstreams().length > 0 ? { upstreams: server.upstreams() } : {}),
    ...(server.limitStore ? { limitStore: server.limitStore } : {}),
    udpIo: udpIo().description,
  };
}

export function localSample(server: SocksServer): Sample {
  const udp = server.udpStats;
  return { t: Date.now() / 1000, forwarded: udp.forwardedDatagrams, delivered: udp.deliveredDatagrams, forwardedBytes: udp.forwardedBytes, deliveredBytes: udp.deliveredBytes };
}

/** An admin source for one server in this process. */
export function serverSource(server: SocksServer): AdminSource {
  const registry: Registry = createMetrics(server);
  return {
    ready: () => server.ready,
    metrics: async () => ({ type: registry.contentType, body: await registry.metrics() }),
    sample: () => Promise.resolve(localSample(server)),
    status: () => Promise.resolve(localStatus(server)),
    usage: () => usageReport(server.gate.quotas.config, (period) => server.gate.quotas.source.usage(period)),
  };
}

/**
 * The admin listener: /metrics (Prometheus), /healthz (alive), /readyz (accepting; 503 while
 * draining), /status (a page that updates itself) and /api/status (its data). It owns its HTTP
 * server and its sampling timer; close() releases both.
 */
export class AdminServer {
  private readonly http: Server;
  private readonly source: AdminSource;
  private readonly history: Sample[] = [];
  private readonly sampler: NodeJS.Timeout;

  constructor(from: SocksServer | AdminSource) {
    this.source = from instanceof SocksServer ? serverSource(from) : from;
    this.http = createServer((request, response) => {
      this.route(request.url ?? '/').then(
        ({ status, type, body }) => {
          response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
          response.end(body);
        },
        (error: Error) => {
          response.writeHead(500, { 'content-type': 'text/plain' });
          response.end(`error: ${error.message}\n`);
        },
      );
    });
    this.sample();
    this.sampler = setInterval(() => this.sample(), 1000);
    this.sampler.unref();
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        const address = this.http.address() as { address: string; port: number };
        resolve({ host: address.address, port: address.port });
      });
    });
  }

  close(): Promise<void> {
    clearInterval(this.sampler);
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }

  private sample(): void {
    this.source.sample().then(
      (sample) => {
        this.history.push(sample);
        if (this.history.length > HISTORY) this.history.shift();
      },
      () => {},
    );
  }

  private async route(url: string): Promise<{ status: number; type: string; body: string }> {
    const path = url.split('?')[0];
    switch (path) {
      case '/metrics':
        return { status: 200, ...(await this.source.metrics()) };
      case '/healthz':
        return { status: 200, type: 'text/plain', body: 'ok\n' };
      case '/readyz':
        return this.source.ready() ? { status: 200, type: 'text/plain', body: 'ready\n' } : { status: 503, type: 'text/plain', body: 'not ready: draining or not listening\n' };
      case '/':
      case '/status':
        return { status: 200, type: 'text/html; charset=utf-8', body: STATUS_PAGE };
      case '/users/usage':
        if (!this.source.usage) return { status: 404, type: 'text/plain', body: 'no quota usage here\n' };
        return { status: 200, type: 'application/json', body: JSON.stringify(await this.source.usage()) };
      case '/api/status':
        return { status: 200, type: 'application/json', body: JSON.stringify({ ...(await this.source.status()), history: [...this.history, await this.source.sample()] }) };
      default:
        return { status: 404, type: 'text/plain', body: 'not found: try /metrics, /healthz, /readyz, /status or /users/usage\n' };
    }
  }
}
