import { connect, type Socket } from 'node:net';
import type { Resolver } from '../dns/resolver.js';
import type { SocksAddress } from 'socksgate-client/protocol';
import { Reply, type ReplyCode } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import { nativeLoaded } from '../native/addon.js';
import { NativeConn } from '../native/tcp.js';

/** Who a dial is for: a dialer that picks among upstreams per client (gateway mode) reads it. */
export interface DialOrigin {
  /** The client's IP (IPv4-mapped addresses unmapped). */
  readonly client: string;
  readonly user: string | null;
}

/** The server's outbound side: direct here; an upstream SOCKS5 hop can implement the same role. */
export interface Dialer {
  /**
   * A connected socket to `destination`, or a SocksError carrying the reply code for the failure.
   * `addresses`, when given, are the ones a domain was already resolved (and checked) to.
   */
  dial(destination: SocksAddress, signal: AbortSignal, addresses?: readonly string[], origin?: DialOrigin): Promise<Socket>;
  /**
   * The same as a connection the native helper holds, for a tunnel between two such connections;
   * absent where the dialer cannot (an upstream hop), and then dial() serves.
   */
  dialNative?(destination: SocksAddress, addresses?: readonly string[]): Promise<NativeConn>;
}

export class DirectDialer implements Dialer {
  constructor(
    private readonly resolver: Resolver,
    private readonly timeoutMs: number,
  ) {}

  async dial(destination: SocksAddress, signal: AbortSignal, addresses?: readonly string[]): Promise<Socket> {
    const deadline = Date.now() + this.timeoutMs;
    const hosts = addresses ?? (destination.type === 'domain' ? await this.resolver.resolve(destination.host) : [destination.host]);
    let lastError: unknown;
    // Every resolved address, in the resolver's order, within one overall deadline.
    for (const host of hosts) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      try {
        return await connectOnce(host, destination.port, remaining, signal);
      } catch (error) {
        lastError = error;
        if (signal.aborted) break;
      }
    }
    throw toSocksError(lastError ?? Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }), destination);
  }

  /** dial()'s twin on the native helper (where it is loaded): the same addresses, order and deadline. */
  get dialNative(): ((destination: SocksAddress, addresses?: readonly string[]) => Promise<NativeConn>) | undefined {
    return nativeLoaded() ? this.connectNative : undefined;
  }

  // No AbortSignal (one per session costs an AbortController and an Error with its stack): the caller
  // checks whether its session is still open once this resolves, and closes what it got if not.
  private readonly connectNative = async (destination: SocksAddress, addresses?: readonly string[]): Promise<NativeConn> => {
    const deadline = Date.now() + this.timeoutMs;
    const hosts = addresses ?? (destination.type === 'domain' ? await this.resolver.resolve(destination.host) : [destination.host]);
    let code = 'ETIMEDOUT';
    for (const host of hosts) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const result = await NativeConn.connect(host, destination.port, remaining);
      if (typeof result !== 'string') return result;
      code = result;
    }
    throw toSocksError(Object.assign(new Error(`connect: ${code}`), { code }), destination);
  };
}

function connectOnce(host: string, port: number, timeoutMs: number, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    const finish = (error: Error | null): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.off('connect', onConnect);
      socket.off('error', onError);
      if (error) {
        socket.destroy();
        reject(error);
      } else {
        resolve(socket);
      }
    };
    const onConnect = (): void => finish(null);
    const onError = (error: Error): void => finish(error);
    const onAbort = (): void => finish(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    const timer = setTimeout(() => finish(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'ETIMEDOUT' })), timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** RFC 1928 §6 reply code for a failed outbound attempt. */
export function replyForError(error: unknown): ReplyCode {
  if (error instanceof SocksError && error.reply !== null) return error.reply;
  switch ((error as NodeJS.ErrnoException | undefined)?.code) {
    case 'ECONNREFUSED':
      return Reply.CONNECTION_REFUSED;
    case 'ENETUNREACH':
    case 'ENETDOWN':
    case 'EAFNOSUPPORT':
    case 'EADDRNOTAVAIL':
      return Reply.NETWORK_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
    case 'ETIMEDOUT':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return Reply.HOST_UNREACHABLE;
    case 'EACCES':
    case 'EPERM':
      return Reply.NOT_ALLOWED;
    default:
      return Reply.GENERAL_FAILURE;
  }
}

function toSocksError(error: unknown, destination: SocksAddress): SocksError {
  if (error instanceof SocksError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
  return new SocksError('ERR_DIAL', `cannot reach ${destination.host}:${destination.port}: ${code}`, replyForError(error), { cause: error });
}
