/**
 * The client API: `import { connect } from 'socksgate-client'` (or `require('socksgate-client')`).
 * Names go to the proxy with `socks5h://` and with proxy options `{ host, port }`; `socks5://`
 * resolves them on this host.
 *
 * @module socksgate-client
 */
export { connect, connectWithReply, type ConnectOptions, type ConnectResult } from './connect.js';
export { bind, type BindOptions, type BindHandle } from './bind.js';
export { associate, UdpAssociation, type AssociateOptions, type ReassociateOptions, type UdpMessage } from './associate.js';
export { maxDatagramSize, roundTrip, type ProbeOptions } from './probe.js';
export { parseProxy, type ProxyInput, type ProxyOptions } from './proxy.js';
export type { DialOptions, LookupFunction, SocketOptions } from './control.js';
export { SocksError } from './protocol/errors.js';
export { formatAddress, type SocksAddress, type HostType } from './protocol/address.js';
export { Reply, describeReply, type ReplyCode } from './protocol/constants.js';
