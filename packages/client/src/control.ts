import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { connect as tcpConnect, isIP, type Socket, type TcpNetConnectOpts } from 'node:net';
import { addressFromHost, type SocksAddress } from './protocol/address.js';
import { encodeCredentials, parseAuthStatus } from './protocol/auth.js';
import { Command, describeReply, Method, Reply, type CommandCode, type ReplyCode } from './protocol/constants.js';
import { SocksError } from './protocol/errors.js';
import { encodeGreeting, parseMethodSelection } from './protocol/greeting.js';
import type { ParseResult } from './protocol/parse.js';
import { ByteReader } from './protocol/reader.js';
import { encodeRequest, parseReply, type ReplyMessage } from './protocol/request.js';
import { parseChain, type ProxyChain, type ProxyOptions } from './proxy.js';

/** Resolves a name to addresses, with the signature of Node's dns.lookup (as net.connect takes it). */
export type LookupFunction = (hostname: string, options: LookupOptions, callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => void;

/** Options of the TCP connection to the (first) proxy, as net.connect takes them. */
export type SocketOptions = Omit<TcpNetConnectOpts, 'host' | 'port' | 'timeout' | 'signal' | 'onread'>;

export interface DialOptions {
  /** Milliseconds for reaching each proxy and completing its handshake and request (default 10000). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /**
   * A socket already connected (or connecting) to the first proxy, to use instead of opening one:
   * for example a stream from another tunnel. It is destroyed on failure.
   */
  readonly socket?: Socket;
  /** The local address the connection to the first proxy leaves from. */
  readonly localAddress?: string;
  /** More options for the connection to the first proxy (noDelay defaults to true). */
  readonly socketOptions?: SocketOptions;
  /**
   * Resolves destination names when this host resolves them (socks5://, or remoteDns false);
   * default dns.lookup. Never called for names the proxy resolves.
   */
  readonly lookup?: LookupFunction;
}

/**
 * The client's TCP connection to the proxy during the handshake: reads whole messages with the
 * codec's incremental reader, within one deadline, and fails with a typed SocksError.
 */
export class ControlConnection {
  private readonly reader = new ByteReader();
  private wake: (() => void) | null = null;
  private failure: SocksError | null = null;
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    readonly socket: Socket,
    private readonly proxy: ProxyOptions,
    private readonly signal: AbortSignal | undefined,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Connects to the proxy and negotiates a method (and credentials). */
  static async open(proxy: ProxyOptions, options: DialOptions = {}): Promise<ControlConnection> {
    if (options.signal?.aborted) {
      options.socket?.destroy();
      throw aborted(options.signal);
    }
    const local = options.localAddress === undefined ? {} : { localAddress: options.localAddress };
    const socket = options.socket ?? tcpConnect({ noDelay: true, ...options.socketOptions, ...local, host: proxy.host, port: proxy.port });
    const control = new ControlConnection(socket, proxy, options.signal);
    control.startDeadline(options.timeoutMs ?? 10_000, `SOCKS5 handshake with ${proxy.host}:${proxy.port}`);
    try {
      await control.until(() => !socket.connecting);
      await control.negotiate();
      return control;
    } catch (error) {
      control.destroy();
      throw error;
    }
  }

  /** Sends a request and waits for its reply; a reply other than 0x00 becomes a SocksError carrying it. */
  async request(command: CommandCode, destination: SocksAddress): Promise<ReplyMessage> {
    this.socket.write(encodeRequest(command, destination));
    return this.expectReply(`request for ${destination.host}:${destination.port}`);
  }

  /** Reads one more reply (BIND's second), optionally with its own deadline. */
  async expectReply(what: string, timeoutMs?: number): Promise<ReplyMessage> {
    if (timeoutMs !== undefined) this.startDeadline(timeoutMs, what);
    const reply = await this.read(parseReply);
    if (reply.reply !== Reply.SUCCEEDED) {
      throw new SocksError('ERR_SOCKS_REPLY', `proxy ${this.proxy.host}:${this.proxy.port} refused the ${what}: ${describeReply(reply.reply)}`, reply.reply as ReplyCode);
    }
    return reply;
  }

  /** Ends the handshake: stops the deadline and the reader; returns bytes that followed the reply. */
  release(): Buffer {
    this.clearDeadline();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('error', this.onError);
    this.signal?.removeEventListener('abort', this.onAbort);
    return this.reader.take();
  }

  destroy(): void {
    this.release();
    this.socket.destroy();
  }

  private async negotiate(): Promise<void> {
    const withCredentials = this.proxy.username !== undefined && this.proxy.password !== undefined;
    this.socket.write(encodeGreeting(withCredentials ? [Method.NO_AUTH, Method.USERNAME_PASSWORD] : [Method.NO_AUTH]));
    const method = await this.read(parseMethodSelection);
    if (method === Method.NO_AUTH) return;
    if (method === Method.USERNAME_PASSWORD && withCredentials) {
      this.socket.write(encodeCredentials(this.proxy.username!, this.proxy.password!));
      if (!(await this.read(parseAuthStatus))) {
        throw new SocksError('ERR_AUTH_FAILED', `proxy ${this.proxy.host}:${this.proxy.port} rejected the username or password`);
      }
      return;
    }
    const hint = withCredentials
      ? 'it accepts neither "no authentication" nor username/password'
      : 'it does not accept "no authentication"; if it needs a login, put the username and password in the proxy URL (socks5://user:pass@host:port)';
    throw new SocksError('ERR_NO_ACCEPTABLE_METHOD', `proxy ${this.proxy.host}:${this.proxy.port} refused the handshake: ${hint}`);
  }

  private async read<T>(parser: (buf: Buffer) => ParseResult<T>): Promise<T> {
    for (;;) {
      const result = this.reader.read(parser);
      if (result.status === 'ok') return result.value;
      if (result.status === 'error') throw new SocksError('ERR_PROTOCOL', `proxy ${this.proxy.host}:${this.proxy.port} sent an invalid answer: ${result.error.message}`);
      await this.until(() => this.reader.length > 0, true);
    }
  }

  /** Waits for `ready()` (or, with `fresh`, for the next event), failing on error, close, timeout or abort. */
  private until(ready: () => boolean, fresh = false): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (!fresh && ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.wake = () => {
        if (this.failure) {
          this.wake = null;
          reject(this.failure);
        } else if (ready()) {
          this.wake = null;
          resolve();
        }
      };
      if (!fresh) this.socket.once('connect', () => this.wake?.());
    });
  }

  private fail(error: SocksError): void {
    this.failure ??= error;
    this.wake?.();
  }

  private startDeadline(ms: number, what: string): void {
    this.clearDeadline();
    this.timer = setTimeout(() => {
      this.fail(new SocksError('ERR_TIMEOUT', `${what} timed out after ${ms} ms`));
      this.socket.destroy();
    }, ms);
  }

  private clearDeadline(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.reader.push(chunk);
    this.wake?.();
  };

  private readonly onEnd = (): void => {
    this.fail(new SocksError('ERR_PROXY_CLOSED', `proxy ${this.proxy.host}:${this.proxy.port} closed the connection during the handshake`));
  };

  private readonly onError = (error: NodeJS.ErrnoException): void => {
    const reaching = error.code === 'ECONNREFUSED' || error.code === 'EHOSTUNREACH' || error.code === 'ENETUNREACH' || error.code === 'ENOTFOUND';
    this.fail(
      new SocksError(
        reaching ? 'ERR_PROXY_UNREACHABLE' : 'ERR_PROXY_CONNECTION',
        `${reaching ? 'cannot reach' : 'connection to'} proxy ${this.proxy.host}:${this.proxy.port}${reaching ? '' : ' failed'}: ${error.code ?? error.message}`,
        null,
        { cause: error },
      ),
    );
  };

  private readonly onAbort = (): void => {
    this.fail(aborted(this.signal!));
    this.socket.destroy();
  };
}

function aborted(signal: AbortSignal): SocksError {
  return new SocksError('ERR_ABORTED', 'the operation was aborted', null, { cause: signal.reason });
}

/**
 * The destination as the proxy should see it: names go to the proxy with `remoteDns` (socks5h, the
 * default), otherwise they are resolved here first, with `lookup` (default dns.lookup).
 */
export async function destinationFor(host: string, port: number, remoteDns: boolean, lookup: LookupFunction = dnsLookup): Promise<SocksAddress> {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SocksError('ERR_PORT', `port ${port} is not a number from 0 to 65535`);
  if (isIP(host) || remoteDns) return addressFromHost(host, port);
  try {
    const address = await new Promise<string>((resolve, reject) =>
      lookup(host, {}, (error, found) => {
        const first = Array.isArray(found) ? found[0]?.address : found;
        if (error || !first) reject(error ?? Object.assign(new Error(`no address for ${host}`), { code: 'ENOTFOUND' }));
        else resolve(first);
      }),
    );
    return addressFromHost(address, port);
  } catch (error) {
    throw new SocksError('ERR_DNS', `cannot resolve ${host} locally (${(error as NodeJS.ErrnoException).code}); use socks5h:// to let the proxy resolve it`, null, { cause: error });
  }
}

/**
 * Reaches the last proxy of a chain, handshake done: the first hop directly (or on `options.socket`),
 * each next one through a CONNECT on the hop before it. Each hop resolves the next hop's name
 * unless it says remoteDns false.
 */
export async function dialChain(chain: ProxyChain | readonly ProxyOptions[], options: DialOptions = {}): Promise<{ control: ControlConnection; hops: ProxyOptions[] }> {
  const hops = parseChain(chain);
  let control = await ControlConnection.open(hops[0]!, options);
  for (let i = 1; i < hops.length; i++) {
    const next = hops[i]!;
    let socket: Socket;
    try {
      const to = await destinationFor(next.host, next.port, hops[i - 1]!.remoteDns !== false, options.lookup);
      await control.request(Command.CONNECT, to);
      const early = control.release();
      if (early.length > 0) control.socket.unshift(early);
      socket = control.socket;
    } catch (error) {
      control.destroy();
      throw error;
    }
    control = await ControlConnection.open(next, { timeoutMs: options.timeoutMs, signal: options.signal, socket });
  }
  return { control, hops };
}
