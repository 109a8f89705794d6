import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { ControlConnection } from 'socksgate-client/control';
import type { ProxyOptions } from 'socksgate-client';
import { formatAddress, addressFromHost } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import type { UpstreamSet, UpstreamSnapshot } from '../server/server.js';

export type Selection = 'hash' | 'least-sessions';

export interface UpstreamPoolOptions {
  /** The upstream servers (credentials included); names always go to them unresolved. */
  readonly upstreams: readonly ProxyOptions[];
  /** hash: rendezvous hashing of the client IP (a client stays on one upstream); least-sessions: the least busy. */
  readonly select: Selection;
  /** Time between health checks of each upstream. */
  readonly healthIntervalMs: number;
  /** Time one health check (connect + SOCKS5 greeting, and login when configured) may take. */
  readonly healthTimeoutMs: number;
  /** Consecutive failures (health checks, or sessions that could not reach it) that take an upstream out. */
  readonly failuresToDown: number;
  readonly log: Logger;
}

/** One upstream server and what the gateway knows about it. */
export class Upstream {
  /** host:port, for logs and metric labels (never the credentials). */
  readonly name: string;
  up = true;
  sessionsTotal = 0;
  readonly failures = { 'health-check': 0, dial: 0 };
  healthCheckSeconds: number | null = null;
  /** Consecutive failures since the last success. */
  failing = 0;
  /** Live sessions carried to this upstream: each one's `lost` closes it. */
  readonly leases = new Set<Lease>();
  /** Rendezvous weights are hashed from this, so they do not change when others come and go. */
  readonly key: string;

  constructor(readonly proxy: ProxyOptions) {
    this.name = formatAddress(addressFromHost(proxy.host, proxy.port));
    this.key = this.name;
  }
}

/** A session's hold on an upstream: counted while held; `lost` runs if the upstream is taken out. */
export class Lease {
  private released = false;

  constructor(
    readonly upstream: Upstream,
    private readonly lost: (reason: string) => void,
  ) {
    upstream.leases.add(this);
    upstream.sessionsTotal++;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.upstream.leases.delete(this);
  }

  /** The upstream went down: the session ends (and releases the lease as it closes). */
  lose(reason: string): void {
    if (this.released) return;
    this.release();
    this.lost(reason);
  }
}

/**
 * The upstream servers of gateway mode: which are up (active health checks plus failed sessions),
 * which one a client's session goes to, and how many sessions each carries. Owns the health-check
 * timer and the checks in flight; close() stops both.
 */
export class UpstreamPool implements UpstreamSet {
  readonly upstreams: readonly Upstream[];
  private timer: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();
  private readonly checking = new Set<Upstream>();
  private closed = false;
  /** Sessions refused for want of an upstream since the last log line about it, and when that was. */
  private refused = 0;
  private refusedLoggedAt = 0;

  constructor(private readonly options: UpstreamPoolOptions) {
    if (options.upstreams.length === 0) throw new SocksError('ERR_NO_UPSTREAMS', 'gateway mode needs at least one upstream');
    this.upstreams = options.upstreams.map((proxy) => new Upstream(proxy));
  }

  /** Starts the health checks (the first round at once). */
  start(): void {
    if (this.closed || this.timer) return;
    const o = this.options;
    o.log.info({ upstreams: this.upstreams.map((u) => u.name), select: o.select, healthIntervalMs: o.healthIntervalMs, healthFailures: o.failuresToDown }, `gateway mode: sessions go to ${this.upstreams.length} upstream(s)`);
    this.round();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.abort.abort(new Error('gateway closing'));
  }

  snapshot(): UpstreamSnapshot[] {
    return this.upstreams.map((u) => ({
      upstream: u.name,
      up: u.up,
      sessionsActive: u.leases.size,
      sessionsTotal: u.sessionsTotal,
      failures: { ...u.failures },
      healthCheckSeconds: u.healthCheckSeconds,
    }));
  }

  /**
   * The upstreams that are up, best first for this client: by rendezvous (highest random weight)
   * hashing of the client IP, so a client keeps its upstream while the set is stable and only the
   * clients of an upstream that goes away move; or by fewest live sessions (ties in hash order).
   */
  rank(client: string): Upstream[] {
    const up = this.upstreams.filter((u) => u.up);
    const weight = new Map(up.map((u) => [u, rendezvousWeight(client, u.key)]));
    const byHash = (a: Upstream, b: Upstream): number => (weight.get(b)! > weight.get(a)! ? 1 : weight.get(b)! < weight.get(a)! ? -1 : 0);
    if (this.options.select === 'least-sessions') return up.sort((a, b) => a.leases.size - b.leases.size || byHash(a, b));
    return up.sort(byHash);
  }

  /** The error for a session when no upstream is up (reply 0x01); logged at most once a second, with a count. */
  noUpstream(): SocksError {
    const down = this.upstreams.map((u) => u.name).join(', ');
    this.refused++;
    const now = Date.now();
    if (now - this.refusedLoggedAt >= 1000) {
      this.options.log.warn({ upstreams: down, refused: this.refused }, 'no upstream is up: sessions refused');
      this.refused = 0;
      this.refusedLoggedAt = now;
    }
    return new SocksError('ERR_NO_UPSTREAM', `no upstream is up (all of ${down} are down)`, Reply.GENERAL_FAILURE);
  }

  /** A session could not reach `upstream` (connection or handshake failed): counts toward taking it out. */
  dialFailed(upstream: Upstream, error: Error): void {
    upstream.failures.dial++;
    this.options.log.warn({ upstream: upstream.name, err: error.message }, 'upstream unreachable for a session');
    this.failed(upstream, `sessions cannot reach it: ${error.message}`);
  }

  private failed(upstream: Upstream, reason: string): void {
    upstream.failing++;
    if (!upstream.up || upstream.failing < this.options.failuresToDown) return;
    upstream.up = false;
    const leases = [...upstream.leases];
    this.options.log.warn({ upstream: upstream.name, reason, failures: upstream.failing, closing: leases.length }, `upstream ${upstream.name} is down: taken out of selection, its sessions closed`);
    for (const lease of leases) lease.lose(`upstream ${upstream.name} is down`);
  }

  private succeeded(upstream: Upstream, seconds: number): void {
    upstream.failing = 0;
    upstream.healthCheckSeconds = seconds;
    if (upstream.up) return;
    upstream.up = true;
    this.options.log.info({ upstream: upstream.name, ms: Math.round(seconds * 1000) }, `upstream ${upstream.name} is up again`);
  }

  private round(): void {
    this.timer = null;
    for (const upstream of this.upstreams) if (!this.checking.has(upstream)) void this.check(upstream);
    this.timer = setTimeout(() => this.round(), this.options.healthIntervalMs);
  }

  /** A health check: connect and complete a real SOCKS5 greeting (and login, when configured). */
  private async check(upstream: Upstream): Promise<void> {
    this.checking.add(upstream);
    const started = performance.now();
    try {
      const control = await ControlConnection.open(upstream.proxy, { timeoutMs: this.options.healthTimeoutMs, signal: this.abort.signal });
      control.destroy();
      if (!this.closed) this.succeeded(upstream, (performance.now() - started) / 1000);
    } catch (error) {
      if (this.closed) return;
      upstream.failures['health-check']++;
      this.options.log.debug({ upstream: upstream.name, err: (error as Error).message }, 'upstream health check failed');
      this.failed(upstream, `health check failed: ${(error as Error).message}`);
    } finally {
      this.checking.delete(upstream);
    }
  }
}

/** Rendezvous weight of (client, upstream): the first 6 bytes of SHA-256 as an integer. */
function rendezvousWeight(client: string, upstream: string): number {
  return createHash('sha256').update(`${client}\u0000${upstream}`).digest().readUIntBE(0, 6);
}
