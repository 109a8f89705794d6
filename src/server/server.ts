import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import pino, { type Logger } from 'pino';
import { createResolver, type Resolver } from '../dns/resolver.js';
import { DirectDialer, type Dialer } from './dialer.js';
import { Session } from './session.js';
import { HandshakeDeadlines } from './handshake-deadlines.js';
import { ServerStats, type CommandRunner, type LiveSettings, type SessionContext } from './context.js';
import { runBind } from './bind.js';
import { AuthLockout, type LockoutOptions } from '../policy/lockout.js';
import type { RateLimits } from '../policy/limits.js';
import { Gate, type GateRules } from '../policy/gate.js';
import type { LimitStore, StoreDownMode } from '../policy/store.js';
import type { QuotaSettings } from '../policy/quota.js';
import { Reply } from 'socksgate-client/protocol';
import { configSchema } from '../config/schema.js';
import { networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { Policy } from '../policy/policy.js';
import type { RuleConfig } from '../policy/rule.js';
import type { UserStore } from './users.js';
import { formatAddress, addressFromHost, type SocksAddress } from 'socksgate-client/protocol';
import type { EgressFactory, UdpContext } from './associate.js';
import { FixedPortDemux, type DemuxSteer } from '../udp/demux.js';
import { ReassemblyBudget } from '../udp/fragments.js';
import { UdpStats } from '../udp/stats.js';
import { KernelDrops } from '../udp/kernel-drops.js';
import { RELAY_BUFFER_BYTES } from '../config/schema.js';
import { setBusyPoll } from '../native/addon.js';
import { NativeFront, type FrontHooks } from './native-front.js';

export interface UdpOptions {
  /**
   * Absent or null: each association gets its own relay socket. A number: fixed-port mode, every
   * association shares this UDP port on each listen address (0 picks a free port, for tests).
   */
  readonly port?: number | null;
  /** BND.ADDR for UDP ASSOCIATE replies instead of the address the client reached. */
  readonly advertise?: string | null;
  readonly filtering?: 'address-and-port' | 'endpoint-independent';
  readonly fragments?: 'reassemble' | 'drop';
  readonly fragmentTimeoutMs?: number;
  /** Bytes of fragments per association, and for all associations together. */
  readonly reassemblyMemory?: number;
  readonly reassemblyMemoryTotal?: number;
  /** Largest payload relayed either way. */
  readonly maxPayload?: number;
  /** 0: associations end only with their control connection. */
  readonly idleTimeoutMs?: number;
  /** TCP keepalive delay on control connections; 0 disables. */
  readonly keepaliveMs?: number;
  /**
   * Adaptive busy polling of the native relay sockets in microseconds (per thread: the last server
   * made sets it); 0 turns it off. Default: the schema's udp.busyPoll.
   */
  readonly busyPollUs?: number;
  /**
   * SO_RCVBUF and SO_SNDBUF of each association's relay socket, in bytes (capped by the kernel at
   * net.core.rmem_max / wmem_max); 0 keeps the kernel's default. Default: RELAY_BUFFER_BYTES.
   */
  readonly receiveBuffer?: number;
  readonly sendBuffer?: number;
}


export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

export interface ServerOptions {
  /** Where to accept SOCKS5 clients. */
  readonly listen: readonly Endpoint[];
  /** Users for RFC 1929 username/password; null or absent: no authentication. */
  readonly users?: UserStore | null;
  /** Concurrent client connections; more are closed at once. */
  readonly maxClients?: number;
  readonly handshakeTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly bindTimeoutMs?: number;
  /** DNS servers ("IP" or "IP:PORT") for names in requests; empty: the system's resolver. */
  readonly dnsServers?: readonly string[];
  readonly resolver?: Resolver;
  readonly dialer?: Dialer;
  /**
   * The native front door on the listeners (src/server/native-front.ts): the helper accepts and
   * carries the client connections, and a CONNECT dialed directly stays on it from end to end, without
   * a net.Socket. Default: on where the helper is loaded.
   */
  readonly nativeFront?: boolean;
  readonly logger?: Logger;
  readonly udp?: UdpOptions;
  /** Access rules, first match wins (see the README). */
  readonly rules?: readonly RuleConfig[];
  readonly defaultAction?: 'allow' | 'deny';
  readonly groups?: Readonly<Record<string, readonly string[]>>;
  /** Allow loopback destinations, denied by default. */
  readonly allowLoopbackTargets?: boolean;
  readonly limits?: LimitOptions;
  /** Traffic quotas per user (quotas.* of the config). */
  readonly quotas?: QuotaSettings;
  /** Slowing and blocking of addresses that keep failing to log in. */
  readonly auth?: LockoutOptions;
  /** False for a hop whose upstream decides about destinations (no safe defaults, no local name checks). */
  readonly destinationChecks?: boolean;
  /** Sends UDP through an upstream hop instead of this host's own sockets (socksgate tunnel). */
  readonly udpEgress?: EgressFactory;
  /** In a worker process: fixed-port mode shares its port with the sibling workers through this. */
  readonly steer?: DemuxSteer;
  /** Runs BIND instead of a listener on this host (gateway mode: through the upstream's BIND). */
  readonly bind?: CommandRunner;
  /** Gateway mode: the upstream servers sessions are carried to; started by listen(), closed by close(). */
  readonly upstreams?: UpstreamSet;
  /** Where the session caps are counted across workers or instances (limits.store); the server closes it. */
  readonly limitStore?: LimitStore | null;
}

/** One upstream server as metrics and the status page show it (never its credentials). */
export interface UpstreamSnapshot {
  /** host:port. */
  readonly upstream: string;
  readonly up: boolean;
  readonly sessionsActive: number;
  readonly sessionsTotal: number;
  /** Failures by kind: 'health-check' (a check failed) and 'dial' (a session could not reach it). */
  readonly failures: { readonly 'health-check': number; readonly dial: number };
  /** How long the last successful health check took, in seconds; null before the first. */
  readonly healthCheckSeconds: number | null;
}

/** The upstream side of gateway mode, as the server sees it. */
export interface UpstreamSet {
  start(): void;
  close(): void;
  snapshot(): UpstreamSnapshot[];
}

export interface LimitOptions {
  /** Concurrent sessions per client address / per user; 0 for no limit. */
  readonly sessionsPerClient?: number;
  readonly sessionsPerUser?: number;
  readonly overLimitReply?: 'general-failure' | 'not-allowed';
  /** When the limit store cannot answer a session's claim: this process' own counts decide, or refuse. */
  readonly storeDown?: StoreDownMode;
  readonly client?: Partial<RateLimits>;
  readonly user?: Partial<RateLimits>;
  readonly destinationsPerAssociation?: number;
  /** Replies at most ratio × what the client sent, plus burst bytes; ratio 0 for no limit. */
  readonly amplificationRatio?: number;
  readonly amplificationBurst?: number;
}

const NO_RATES: RateLimits = { udpPacketsPerSecond: 0, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 };

/** The parts of the options a reload may change. */
export type ReloadableOptions = Pick<ServerOptions, 'users' | 'rules' | 'defaultAction' | 'groups' | 'allowLoopbackTargets' | 'limits' | 'quotas'>;

/** What a reload replaces besides the gate's rules. */
function liveSettings(options: ReloadableOptions): LiveSettings {
  return { users: options.users ?? null, overLimitReply: options.limits?.overLimitReply === 'not-allowed' ? Reply.NOT_ALLOWED : Reply.GENERAL_FAILURE };
}

/** Every address of this machine: destinations the safe defaults deny unless a rule names them. */
function ownAddresses(listen: readonly Endpoint[], log: Logger): string[] {
  const own = new Set<string>();
  for (const endpoint of listen) if (isIP(endpoint.host)) own.add(endpoint.host);
  try {
    for (const list of Object.values(networkInterfaces())) for (const info of list ?? []) own.add(info.address);
  } catch (error) {
    // A sandbox without netlink sockets (systemd's RestrictAddressFamilies without AF_NETLINK) cannot list them.
    log.warn(
      { err: (error as Error).message, ownAddresses: [...own] },
      'cannot list the network interfaces: only the listen addresses count as the proxy\'s own (add AF_NETLINK to RestrictAddressFamilies)',
    );
  }
  return [...own];
}

// The config schema is the one source of defaults: a server made from partial options (the library
// API) gets the same ones as `socksgate serve`.
const DEFAULTS = configSchema.parse({});

const LOCKOUT_DEFAULTS: LockoutOptions = {
  slowAfter: DEFAULTS.auth.slowAfter,
  blockAfter: DEFAULTS.auth.blockAfter,
  blockMs: DEFAULTS.auth.blockFor * 1000,
  windowMs: DEFAULTS.auth.window * 1000,
};

export const SERVER_DEFAULTS = {
  maxClients: DEFAULTS.maxClients,
  handshakeTimeoutMs: DEFAULTS.handshakeTimeout * 1000,
  connectTimeoutMs: DEFAULTS.connectTimeout * 1000,
  idleTimeoutMs: DEFAULTS.idleTimeout * 1000,
  bindTimeoutMs: DEFAULTS.bindTimeout * 1000,
} as const;

/** The limit store of a server: its kind, whether it answers, sessions it could not answer for. */
export interface LimitStoreState {
  readonly kind: 'local' | 'redis';
  readonly up: boolean;
  /** Sessions admitted by the process' own counts because the store could not answer. */
  readonly fallbacks: number;
  /** Sessions refused because the store could not answer (limits.storeDown: refuse). */
  readonly refusals: number;
}

/** What a session looked like when it ended (for metrics and access logs). */
export interface SessionEnd {
  readonly command: string;
  readonly seconds: number;
  readonly result: string;
  /** Bytes client → target and target → client (relaying commands; 0 otherwise). */
  readonly up: number;
  readonly down: number;
}

export interface SocksServerEvents {
  'session-end': [SessionEnd];
  /** A DNS lookup not answered from the cache. */
  'dns-lookup': [seconds: number, ok: boolean];
}

/** One live session as a status page shows it. */
export interface SessionSnapshot {
  readonly client: string;
  readonly user: string | null;
  readonly command: string;
  readonly target: string;
  readonly up: number;
  readonly down: number;
  readonly ageSeconds: number;
  readonly [detail: string]: unknown;
}

/** A SOCKS5 server: owns its listeners and every live session. */
export class SocksServer extends EventEmitter<SocksServerEvents> {
  private readonly tcpListeners: Server[] = [];
  private readonly sessions = new Set<Session>();
  /** The native front doors on the listeners (none without the helper or where they do not apply). */
  private readonly fronts: NativeFront[] = [];
  private readonly ctx: SessionContext;
  private readonly maxClients: number;
  private readonly log: Logger;
  private refusedOverLimit = 0;
  private readonly demux: FixedPortDemux | null;
  /** Counters of the UDP relay. */
  readonly udpStats = new UdpStats();
  /** Kernel receive-queue drops of the dgram relay sockets, read when metrics are asked for. */
  private readonly kernelDrops = new KernelDrops(this.udpStats);
  /** Counters of the TCP side: failed logins, blocked addresses, limits, denials. */
  readonly stats = new ServerStats();

  private draining = false;

  constructor(private readonly options: ServerOptions) {
    super();
    this.log = options.logger ?? pino({ level: 'silent' });
    this.maxClients = options.maxClients ?? SERVER_DEFAULTS.maxClients;
    const resolver = options.resolver ?? createResolver({ servers: options.dnsServers ?? [], onLookup: (seconds, ok) => this.emit('dns-lookup', seconds, ok) });
    const udp = options.udp ?? {};
    setBusyPoll(udp.busyPollUs ?? DEFAULTS.udp.busyPoll);
    this.demux = udp.port === undefined || udp.port === null ? null : new FixedPortDemux(this.udpStats, this.log, options.steer ?? null, this.kernelDrops);
    const udpContext: UdpContext = {
      stats: this.udpStats,
      budget: new ReassemblyBudget(udp.reassemblyMemoryTotal ?? DEFAULTS.udp.reassemblyMemoryTotal),
      demux: this.demux,
      advertise: udp.advertise ?? null,
      endpointIndependent: udp.filtering === 'endpoint-independent',
      reassemble: (udp.fragments ?? 'reassemble') === 'reassemble',
      fragmentTimeoutMs: udp.fragmentTimeoutMs ?? DEFAULTS.udp.fragmentTimeout * 1000,
      reassemblyLimit: udp.reassemblyMemory ?? DEFAULTS.udp.reassemblyMemory,
      maxPayload: udp.maxPayload ?? DEFAULTS.udp.maxPayload,
      idleTimeoutMs: udp.idleTimeoutMs ?? DEFAULTS.udp.idleTimeout * 1000,
      keepaliveMs: udp.keepaliveMs ?? DEFAULTS.udp.keepalive * 1000,
      egress: options.udpEgress ?? null,
      relay: { receiveBuffer: udp.receiveBuffer ?? RELAY_BUFFER_BYTES, sendBuffer: udp.sendBuffer ?? RELAY_BUFFER_BYTES, kernelDrops: this.kernelDrops },
    };
    this.ctx = {
      udp: udpContext,
      live: liveSettings(options),
      gate: new Gate(this.gateRules(options), resolver, new AuthLockout(options.auth ?? LOCKOUT_DEFAULTS), options.limitStore ?? null),
      stats: this.stats,
      resolver,
      dialer: options.dialer ?? new DirectDialer(resolver, options.connectTimeoutMs ?? SERVER_DEFAULTS.connectTimeoutMs),
      log: this.log,
      handshakes: new HandshakeDeadlines(options.handshakeTimeoutMs ?? SERVER_DEFAULTS.handshakeTimeoutMs),
      connectTimeoutMs: options.connectTimeoutMs ?? SERVER_DEFAULTS.connectTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs,
      bindTimeoutMs: options.bindTimeoutMs ?? SERVER_DEFAULTS.bindTimeoutMs,
      runBind: options.bind ?? runBind,
    };
  }

  /**
   * Replaces users, rules and limits at once. Live sessions keep running; their next decision (a new
   * UDP destination, say) uses the new settings. Session counts and rate buckets carry over.
   */
  reload(options: ReloadableOptions): void {
    this.ctx.live = liveSettings(options);
    this.ctx.gate.update(this.gateRules(options));
  }

  private gateRules(options: ReloadableOptions): GateRules {
    const limits = options.limits ?? {};
    return {
      policy: new Policy({
        rules: options.rules ?? [],
        defaultAction: options.defaultAction ?? 'allow',
        groups: options.groups ?? {},
        allowLoopbackTargets: options.allowLoopbackTargets ?? false,
        ownAddresses: ownAddresses(this.options.listen, this.log),
        destinationChecks: this.options.destinationChecks ?? true,
      }),
      limits: {
        sessionsPerClient: limits.sessionsPerClient ?? DEFAULTS.limits.sessionsPerClient,
        sessionsPerUser: limits.sessionsPerUser ?? DEFAULTS.limits.sessionsPerUser,
        client: { ...NO_RATES, ...limits.client },
        user: { ...NO_RATES, ...limits.user },
        destinationsPerAssociation: limits.destinationsPerAssociation ?? DEFAULTS.limits.destinationsPerAssociation,
        amplificationRatio: limits.amplificationRatio ?? DEFAULTS.limits.amplificationRatio,
        amplificationBurst: limits.amplificationBurst ?? DEFAULTS.limits.amplificationBurst,
        storeDown: limits.storeDown ?? DEFAULTS.limits.storeDown,
      },
      ...(options.quotas ? { quotas: options.quotas } : {}),
    };
  }

  /** Brings udpStats.drops['kernel-overflow'] up to date (reads what the kernel reports; for metrics, not per datagram). */
  sampleKernelDrops(): void {
    this.kernelDrops.sample();
  }

  /** The limit store as metrics and the status page show it; null when this process counts on its own. */
  get limitStore(): LimitStoreState | null {
    const store = this.ctx.gate.store;
    if (store === null) return null;
    const { fallbacks, refusals } = this.ctx.gate.storeStats;
    return { kind: store.kind, up: store.up, fallbacks, refusals };
  }

  /** The gate every decision passes (its quota table for the admin endpoint and metrics). */
  get gate(): Gate {
    return this.ctx.gate;
  }

  /** Live client connections. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Connections closed at once because `maxClients` were already connected. */
  get refusedCount(): number {
    return this.refusedOverLimit;
  }

  /** Associations the fixed-port demultiplexer still knows (0 when not in fixed-port mode). */
  get demuxSize(): number {
    return this.demux?.size ?? 0;
  }

  /** A client datagram a sibling worker received on the shared fixed port and passed on. */
  deliverSteered(datagram: Buffer, ip: string, port: number): void {
    this.demux?.deliver(datagram, ip, port);
  }

  /** Bound addresses, in the order of `listen` (ports filled in when 0 was asked for). */
  addresses(): Endpoint[] {
    return this.tcpListeners.map((l) => {
      const a = l.address() as { address: string; port: number };
      return { host: a.address, port: a.port };
    });
  }

  /** Binds every listen address; on any failure closes those already bound and rejects. */
  async listen(): Promise<Endpoint[]> {
    try {
      for (const endpoint of this.options.listen) {
        const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
        this.tcpListeners.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: endpoint.host, port: endpoint.port }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.on('error', (error) => this.log.error({ err: error }, 'listener error'));
        this.attachFront(server);
        if (this.demux) {
          // The address the TCP listener really got ("localhost" may have become ::1 or 127.0.0.1).
          const host = (server.address() as { address: string }).address;
          await this.demux.bind(host, this.options.udp?.port ?? 0);
        }
      }
    } catch (error) {
      await this.close();
      throw error;
    }
    this.options.upstreams?.start();
    return this.addresses();
  }

  /** Accepting connections (listening and not draining). */
  get ready(): boolean {
    return this.tcpListeners.length > 0 && !this.draining;
  }

  /**
   * Graceful shutdown: stop accepting, let live sessions finish for up to `deadlineMs`, then close
   * what is left. Resolves with the number of sessions that had to be cut.
   */
  async drain(deadlineMs: number): Promise<number> {
    this.draining = true;
    for (const front of this.fronts.splice(0)) front.close();
    const closing = this.tcpListeners.splice(0).map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    const deadline = Date.now() + deadlineMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const cut = this.sessions.size;
    // A listener's close completes only when its connections are gone: close the sessions first.
    await this.close();
    await Promise.all(closing);
    return cut;
  }

  /** Live sessions, for a status page (bounded to the first `limit`). */
  snapshot(limit = 500): SessionSnapshot[] {
    const now = performance.now();
    const out: SessionSnapshot[] = [];
    for (const session of this.sessions) {
      if (out.length >= limit) break;
      const [up, down] = session.traffic();
      out.push({
        client: formatAddress(session.client),
        user: session.user,
        command: session.command,
        target: session.target,
        up,
        down,
        ageSeconds: Math.round((now - session.startedAt) / 100) / 10,
        ...session.describe(),
      });
    }
    return out;
  }

  /** Live sessions by command ('-' while still in the handshake). */
  sessionsByCommand(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const session of this.sessions) counts[session.command] = (counts[session.command] ?? 0) + 1;
    return counts;
  }

  /** Gateway mode: the upstream servers and their state; empty otherwise. */
  upstreams(): UpstreamSnapshot[] {
    return this.options.upstreams?.snapshot() ?? [];
  }

  /** Stops listening and closes every session. */
  async close(): Promise<void> {
    this.draining = true;
    for (const front of this.fronts.splice(0)) front.close();
    this.options.upstreams?.close();
    const closing = this.tcpListeners.splice(0).map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    for (const session of [...this.sessions]) session.close('server shutting down');
    this.ctx.handshakes.close();
    await Promise.all([...closing, this.demux?.close()]);
    // After the sessions: their claims (and quota bytes on hand) are given back before the store goes.
    this.ctx.gate.quotas.close();
    await this.ctx.gate.store?.close();
  }

  /** The native front door on a listener, where the helper is loaded and it is not turned off. */
  private attachFront(server: Server): void {
    if (this.options.nativeFront === false) return;
    const front = NativeFront.attach(server, this.frontHooks);
    if (front) this.fronts.push(front);
  }

  private readonly frontHooks: FrontHooks = {
    connection: (conn, host, port, bytes) => {
      this.stats.connectionsAccepted++;
      if (!this.admits(addressFromHost(host, port))) return false;
      const session = new Session(conn, this.ctx, this.sessionClosed, { host, port });
      this.sessions.add(session);
      // Fed once the session is counted: what they lead to may already close it.
      if (bytes !== null) session.connBytes(bytes);
      return true;
    },
  };

  private accept(socket: Socket): void {
    this.stats.connectionsAccepted++;
    this.admitSocket(socket);
  }

  /** A new client socket becomes a session, unless its address is blocked or the server is full. */
  private admitSocket(socket: Socket): Session | null {
    if (!this.admits(addressFromHost(socket.remoteAddress ?? '', socket.remotePort ?? 0))) {
      socket.destroy();
      return null;
    }
    const session = new Session(socket, this.ctx, this.sessionClosed);
    this.sessions.add(session);
    return session;
  }

  /** Whether a new client may have a session: its address is not blocked and the server is not full. */
  private admits(client: SocksAddress): boolean {
    if (this.ctx.live.users && this.ctx.gate.blocked(client.host)) {
      this.stats.authBlocked++;
      return false;
    }
    if (this.sessions.size >= this.maxClients) {
      this.refusedOverLimit++;
      this.log.warn({ client: formatAddress(client), maxClients: this.maxClients }, 'too many clients: connection closed');
      return false;
    }
    return true;
  }

  // One function for every session (not a closure each).
  private readonly sessionClosed = (s: Session): void => {
    this.sessions.delete(s);
    this.emit('session-end', { command: s.command, seconds: (performance.now() - s.startedAt) / 1000, result: s.outcome, up: s.up, down: s.down });
  };
}
