import { createServer, type Server, type Socket } from 'node:net';
import pino, { type Logger } from 'pino';
import { createResolver, type Resolver } from '../dns/resolver.js';
import { DirectDialer, type Dialer } from './dialer.js';
import { Session, type SessionContext } from './session.js';
import type { UserStore } from './users.js';
import { formatAddress, addressFromHost } from '../protocol/address.js';

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
  readonly logger?: Logger;
}

export const SERVER_DEFAULTS = {
  maxClients: 10_000,
  handshakeTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 3_600_000,
  bindTimeoutMs: 60_000,
} as const;

/** A SOCKS5 server: owns its listeners and every live session. */
export class SocksServer {
  private readonly listeners: Server[] = [];
  private readonly sessions = new Set<Session>();
  private readonly ctx: SessionContext;
  private readonly maxClients: number;
  private readonly log: Logger;
  private refusedOverLimit = 0;

  constructor(private readonly options: ServerOptions) {
    this.log = options.logger ?? pino({ level: 'silent' });
    this.maxClients = options.maxClients ?? SERVER_DEFAULTS.maxClients;
    const resolver = options.resolver ?? createResolver({ servers: options.dnsServers ?? [] });
    this.ctx = {
      users: options.users ?? null,
      resolver,
      dialer: options.dialer ?? new DirectDialer(resolver, options.connectTimeoutMs ?? SERVER_DEFAULTS.connectTimeoutMs),
      log: this.log,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? SERVER_DEFAULTS.handshakeTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs,
      bindTimeoutMs: options.bindTimeoutMs ?? SERVER_DEFAULTS.bindTimeoutMs,
    };
  }

  /** Live client connections. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Connections closed at once because `maxClients` were already connected. */
  get refusedCount(): number {
    return this.refusedOverLimit;
  }

  /** Bound addresses, in the order of `listen` (ports filled in when 0 was asked for). */
  addresses(): Endpoint[] {
    return this.listeners.map((l) => {
      const a = l.address() as { address: string; port: number };
      return { host: a.address, port: a.port };
    });
  }

  /** Binds every listen address; on any failure closes those already bound and rejects. */
  async listen(): Promise<Endpoint[]> {
    try {
      for (const endpoint of this.options.listen) {
        const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
        this.listeners.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: endpoint.host, port: endpoint.port }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.on('error', (error) => this.log.error({ err: error }, 'listener error'));
      }
    } catch (error) {
      await this.close();
      throw error;
    }
    return this.addresses();
  }

  /** Stops listening and closes every session. */
  async close(): Promise<void> {
    const closing = this.listeners.splice(0).map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    for (const session of [...this.sessions]) session.close('server shutting down');
    await Promise.all(closing);
  }

  private accept(socket: Socket): void {
    if (this.sessions.size >= this.maxClients) {
      this.refusedOverLimit++;
      this.log.warn({ client: formatAddress(addressFromHost(socket.remoteAddress ?? '', socket.remotePort ?? 0)), maxClients: this.maxClients }, 'too many clients: connection closed');
      socket.destroy();
      return;
    }
    const session = new Session(socket, this.ctx, (s) => this.sessions.delete(s));
    this.sessions.add(session);
  }
}
