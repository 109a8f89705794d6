export { connect, type ConnectOptions } from './connect.js';
export { bind, type BindOptions, type BindHandle } from './bind.js';
export { associate, UdpAssociation, type AssociateOptions, type ReassociateOptions, type UdpMessage } from './associate.js';
export { maxDatagramSize, roundTrip, type ProbeOptions } from './probe.js';
export { parseProxy, type ProxyInput, type ProxyOptions } from './proxy.js';
