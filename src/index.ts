// The public library API: what `import … from 'socksgate'` gets.
export * from 'socksgate-client/protocol';
export { SocksServer, SERVER_DEFAULTS, type ServerOptions, type Endpoint } from './server/server.js';
export { UserStore, hashPassword, setUserInFile } from './server/users.js';
export { DirectDialer, type Dialer, type DialOrigin } from './server/dialer.js';
export { createGateway, type GatewayOptions } from './gateway/gateway.js';
export type { UpstreamSnapshot } from './server/server.js';
export { createResolver, type Resolver, type ResolverOptions } from './dns/resolver.js';
export { loadConfig, validateConfig } from './config/load.js';
export { configSchema, type Config } from './config/schema.js';
export { ConfigError } from './config/errors.js';
export * from 'socksgate-client';
