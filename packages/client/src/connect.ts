import type { Socket } from 'node:net';
import type { SocksAddress } from './protocol/address.js';
import { Command } from './protocol/constants.js';
import { destinationFor, dialChain, type DialOptions } from './control.js';
import { parseChain, type ProxyChain, type ProxyOptions } from './proxy.js';

export interface ConnectOptions extends DialOptions {
  /** A proxy URL or options, or an array of them for a chain (the request goes to the last). */
  readonly proxy: ProxyChain;
  readonly host: string;
  readonly port: number;
}

export interface ConnectResult {
  /** Connected (through the proxies) to host:port, ready for reading and writing. */
  readonly socket: Socket;
  /** BND.ADDR:BND.PORT of the last proxy's reply: the address it connects to the target from. */
  readonly bound: SocksAddress;
  /** The proxies passed through, parsed, first to last. */
  readonly hops: readonly ProxyOptions[];
}

/**
 * CONNECT through the proxy (or a chain), with the reply: the socket, and the address the proxy
 * bound for the connection to the target.
 *
 *   const { socket, bound } = await connectWithReply({ proxy: 'socks5h://127.0.0.1:1080', host: 'example.org', port: 80 });
 */
export async function connectWithReply(options: ConnectOptions): Promise<ConnectResult> {
  const hops = parseChain(options.proxy);
  // Resolved (when this host resolves it) before any connection is made.
  const destination = await destinationFor(options.host, options.port, hops[hops.length - 1]!.remoteDns !== false, options.lookup);
  const { control } = await dialChain(hops, options);
  let bound: SocksAddress;
  try {
    bound = (await control.request(Command.CONNECT, destination)).bound;
  } catch (error) {
    control.destroy();
    throw error;
  }
  const early = control.release();
  // Bytes the target sent right behind the reply belong to the stream.
  if (early.length > 0) control.socket.unshift(early);
  return { socket: control.socket, bound, hops };
}

/**
 * CONNECT through the proxy (or a chain): resolves to a net.Socket connected (through the proxy) to
 * host:port, ready for reading and writing. Failures are SocksErrors; a refusal carries the reply code.
 *
 *   const socket = await connect({ proxy: 'socks5h://127.0.0.1:1080', host: 'example.org', port: 80 });
 */
export async function connect(options: ConnectOptions): Promise<Socket> {
  return (await connectWithReply(options)).socket;
}
