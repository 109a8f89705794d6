import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { parseHostPort, type HostPort } from '../config/endpoint.js';
import { ConfigError } from '../config/errors.js';
import { SocksServer, type ReloadableOptions, type ServerOptions } from './server.js';
import { UserStore } from './users.js';
import type { DemuxSteer } from '../udp/demux.js';
import type { LimitStore } from '../policy/store.js';

function endpoint(text: string): HostPort {
  const parsed = parseHostPort(text);
  if (typeof parsed === 'string') throw new ConfigError('ERR_CONFIG', `listen ${text}: ${parsed}`);
  return parsed;
}

/** Users, rules and limits of a validated config (the users file loaded): what a reload replaces. */
export async function reloadableFromConfig(config: Config): Promise<ReloadableOptions> {
  const users = config.users ? await UserStore.load(config.users) : null;
  if (users && users.size === 0) {
    throw new ConfigError('ERR_USERS_EMPTY', `users file ${config.users} has no users, so nobody could log in; add one with: echo PASSWORD | socksgate passwd --file ${config.users} USER (where the file is mounted read-only, as from a Kubernetes Secret: make it with socksgate passwd, then recreate the Secret from it)`);
  }
  return {
    users,
    rules: config.rules,
    defaultAction: config.defaultAction,
    groups: config.groups,
    allowLoopbackTargets: config.allowLoopbackTargets,
    limits: config.limits,
    quotas: { ...config.quotas, metricsPerUser: config.metrics.perUser },
  };
}

/** Config keys a reload cannot change (they shape listeners and sockets): a restart applies them. */
export function restartOnlyChanges(before: Config, after: Config): string[] {
  const keys: Array<keyof Config> = ['listen', 'udp', 'dns', 'maxClients', 'workers', 'handshakeTimeout', 'connectTimeout', 'idleTimeout', 'bindTimeout', 'auth', 'log', 'allowOpen', 'upstreams', 'upstream'];
  const changed: string[] = keys.filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]));
  // The store is connected at start; its connection and claims are not swapped under live sessions.
  for (const key of ['store', 'claimTtl'] as const) if (before.limits[key] !== after.limits[key]) changed.push(`limits.${key}`);
  return changed;
}

/** The server a validated config describes (users file loaded); not yet listening. */
export async function serverFromConfig(config: Config, logger: Logger, worker?: WorkerShare): Promise<SocksServer> {
  return new SocksServer(await serverOptionsFromConfig(config, logger, worker));
}

/** In a worker process: its share of maxClients, and the fixed-port steering it uses. */
export interface WorkerShare {
  readonly maxClients: number;
  readonly steer: DemuxSteer | null;
  /** limits.store as this process reaches it (null: its own counts alone). */
  readonly limitStore?: LimitStore | null;
}

/** The server options a validated config describes (users file loaded). */
export async function serverOptionsFromConfig(config: Config, logger: Logger, worker?: WorkerShare): Promise<ServerOptions> {
  return {
    ...(await reloadableFromConfig(config)),
    ...(worker?.steer ? { steer: worker.steer } : {}),
    ...(worker?.limitStore ? { limitStore: worker.limitStore } : {}),
    listen: config.listen.map(endpoint),
    maxClients: worker?.maxClients ?? config.maxClients,
    handshakeTimeoutMs: config.handshakeTimeout * 1000,
    connectTimeoutMs: config.connectTimeout * 1000,
    idleTimeoutMs: config.idleTimeout * 1000,
    bindTimeoutMs: config.bindTimeout * 1000,
    dnsServers: config.dns.servers,
    logger,
    auth: { slowAfter: config.auth.slowAfter, blockAfter: config.auth.blockAfter, blockMs: config.auth.blockFor * 1000, windowMs: config.auth.window * 1000 },
    udp: {
      port: config.udp.port === 0 ? null : config.udp.port,
      advertise: config.udp.advertise ?? null,
      filtering: config.udp.filtering,
      fragments: config.udp.fragments,
      fragmentTimeoutMs: config.udp.fragmentTimeout * 1000,
      reassemblyMemory: config.udp.reassemblyMemory,
      reassemblyMemoryTotal: config.udp.reassemblyMemoryTotal,
      maxPayload: config.udp.maxPayload,
      idleTimeoutMs: config.udp.idleTimeout * 1000,
      keepaliveMs: config.udp.keepalive * 1000,
      busyPollUs: config.udp.busyPoll,
      receiveBuffer: config.udp.receiveBuffer,
      sendBuffer: config.udp.sendBuffer,
    },
  };
}
