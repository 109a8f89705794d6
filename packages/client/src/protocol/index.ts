/**
 * The SOCKS5 codec (`socksgate-client/protocol`): pure functions over Buffers and incremental
 * readers, shared by the client and the socksgate server.
 *
 * @module socksgate-client/protocol
 */
export * from './constants.js';
export * from './errors.js';
export * from './parse.js';
export * from './address.js';
export * from './ipv6.js';
export * from './greeting.js';
export * from './auth.js';
export * from './request.js';
export * from './udp-header.js';
export * from './reader.js';
export * from './uot.js';
