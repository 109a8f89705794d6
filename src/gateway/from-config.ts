import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { serverFromConfig, serverOptionsFromConfig, type WorkerShare } from '../server/from-config.js';
import type { SocksServer } from '../server/server.js';
import { createGateway } from './gateway.js';

/**
 * What `socksgate serve` runs for a validated config: a gateway when `upstreams` lists any, else a
 * plain SOCKS5 server. Not yet listening.
 */
export async function socksServerFromConfig(config: Config, logger: Logger, worker?: WorkerShare): Promise<SocksServer> {
  if (config.upstreams.length === 0) return serverFromConfig(config, logger, worker);
  return createGateway(await serverOptionsFromConfig(config, logger, worker), {
    upstreams: config.upstreams,
    select: config.upstream.select,
    udp: config.upstream.udp,
    healthIntervalMs: config.upstream.healthInterval * 1000,
    healthTimeoutMs: config.upstream.healthTimeout * 1000,
    healthFailures: config.upstream.healthFailures,
  });
}
