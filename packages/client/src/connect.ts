import type { Socket } from 'node:net';
import { Command } from './protocol/constants.js';
import { ControlConnection, destinationFor, type DialOptions } from './control.js';
import { parseProxy, type ProxyInput } from './proxy.js';

export interface ConnectOptions extends DialOptions {
  readonly proxy: ProxyInput;
  readonly host: string;
  readonly port: number;
}

/**
 * CONNECT through the proxy: resolves to a net.Socket connected (through the proxy) to host:port,
 * ready for reading and writing. Failures are SocksErrors; a refusal carries the reply code.
 *
 *   const socket = await connect({ proxy: 'socks5h://127.0.0.1:1080', host: 'example.org', port: 80 });
 */
export async function connect(options: ConnectOptions): Promise<Socket> {
  const proxy = parseProxy(options.proxy);
  const destination = await destinationFor(options.host, options.port, proxy.remoteDns ?? false);
  const control = await ControlConnection.open(proxy, options);
  try {
    await control.request(Command.CONNECT, destination);
  } catch (error) {
    control.destroy();
    throw error;
  }
  const early = control.release();
  // Bytes the target sent right behind the reply belong to the stream.
  if (early.length > 0) control.socket.unshift(early);
  return control.socket;
}
