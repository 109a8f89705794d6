import type { Socket } from 'node:net';
import { addressFromHost, type SocksAddress } from './protocol/address.js';
import { Command } from './protocol/constants.js';
import { destinationFor, dialChain, type DialOptions } from './control.js';
import { parseChain, type ProxyChain } from './proxy.js';

export interface BindOptions extends DialOptions {
  /** A proxy URL or options, or an array of them for a chain (the last one listens). */
  readonly proxy: ProxyChain;
  /** The host expected to connect (DST.ADDR); '0.0.0.0' lets the proxy accept any host, if it allows that. */
  readonly host: string;
  readonly port?: number;
  /** Milliseconds to wait for the incoming connection after the first reply (default: no limit of ours). */
  readonly acceptTimeoutMs?: number;
}

export interface BindHandle {
  /** Where the proxy listens: tell the other side to connect here. */
  readonly bound: SocksAddress;
  /** The incoming connection, relayed, and who made it (RFC 1928 §4, second reply). */
  readonly accepted: Promise<{ socket: Socket; remote: SocksAddress }>;
  /** Gives up waiting and closes the control connection. */
  close(): void;
}

/** BIND through the proxy, in its two steps: where to connect, then the connection. */
export async function bind(options: BindOptions): Promise<BindHandle> {
  const hops = parseChain(options.proxy);
  const proxy = hops[hops.length - 1]!;
  const destination = await destinationFor(options.host, options.port ?? 0, proxy.remoteDns !== false, options.lookup);
  const { control } = await dialChain(hops, options);
  let first;
  try {
    first = await control.request(Command.BIND, destination);
  } catch (error) {
    control.destroy();
    throw error;
  }
  // A proxy that answers with the unspecified address means "my own address".
  const bound = first.bound.host === '0.0.0.0' || first.bound.host === '::' ? addressFromHost(proxy.host, first.bound.port) : first.bound;
  const accepted = control.expectReply('BIND incoming connection', options.acceptTimeoutMs ?? 2 ** 31 - 1).then(
    (second) => {
      const early = control.release();
      if (early.length > 0) control.socket.unshift(early);
      return { socket: control.socket, remote: second.bound };
    },
    (error: unknown) => {
      control.destroy();
      throw error;
    },
  );
  // The caller may never await it (close() instead): keep that from being an unhandled rejection.
  accepted.catch(() => {});
  return { bound, accepted, close: () => control.destroy() };
}
