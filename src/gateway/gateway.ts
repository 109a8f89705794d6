import pino from 'pino';
import { parseProxy, type ProxyInput } from 'socksgate-client';
import { SERVER_DEFAULTS, SocksServer, type ServerOptions } from '../server/server.js';
import { gatewayBind } from './bind.js';
import { GatewayDialer } from './dialer.js';
import { gatewayEgress } from './egress.js';
import { UpstreamPool, type Selection } from './pool.js';

export interface GatewayOptions {
  /** socks5://[user:pass@]host:port URLs (or parsed options) of the upstream servers. */
  readonly upstreams: readonly ProxyInput[];
  readonly select?: Selection;
  /** How the gateway carries UDP to an upstream: UDP ASSOCIATE (default) or UDP over TCP (socksgate upstreams). */
  readonly udp?: 'udp' | 'tcp';
  readonly healthIntervalMs?: number;
  readonly healthTimeoutMs?: number;
  /** Consecutive failures that take an upstream out of selection. */
  readonly healthFailures?: number;
}

export const GATEWAY_DEFAULTS = { select: 'hash', udp: 'udp', healthIntervalMs: 5000, healthTimeoutMs: 2000, healthFailures: 2 } as const;

/**
 * Gateway mode: a SOCKS5 server that terminates each client session itself (auth, rules, limits,
 * metrics, and the client's UDP on its own relay sockets) and carries the session to one upstream
 * SOCKS5 server: CONNECT through the upstream's CONNECT, UDP through an association it opens to the
 * upstream, BIND through the upstream's BIND. The upstreams decide about destinations on their networks, so
 * the safe defaults (loopback, link-local, own addresses) are theirs to apply, not the gateway's.
 */
export function createGateway(server: Omit<ServerOptions, 'dialer' | 'udpEgress' | 'upstreams' | 'bind' | 'destinationChecks'>, gateway: GatewayOptions): SocksServer {
  const log = server.logger ?? pino({ level: 'silent' });
  const pool = new UpstreamPool({
    upstreams: gateway.upstreams.map((u) => ({ ...parseProxy(u), remoteDns: true })),
    select: gateway.select ?? GATEWAY_DEFAULTS.select,
    healthIntervalMs: gateway.healthIntervalMs ?? GATEWAY_DEFAULTS.healthIntervalMs,
    healthTimeoutMs: gateway.healthTimeoutMs ?? GATEWAY_DEFAULTS.healthTimeoutMs,
    failuresToDown: gateway.healthFailures ?? GATEWAY_DEFAULTS.healthFailures,
    log: log.child({ component: 'gateway' }),
  });
  const timeoutMs = server.connectTimeoutMs ?? SERVER_DEFAULTS.connectTimeoutMs;
  return new SocksServer({
    ...server,
    logger: log,
    dialer: new GatewayDialer(pool, timeoutMs),
    udpEgress: gatewayEgress(pool, { transport: gateway.udp ?? GATEWAY_DEFAULTS.udp, timeoutMs }),
    upstreams: pool,
    bind: gatewayBind(pool, timeoutMs),
    destinationChecks: false,
  });
}
