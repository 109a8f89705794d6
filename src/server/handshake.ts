import { selectMethod } from './auth.js';
import { encodeAuthStatus, parseCredentials } from 'socksgate-client/protocol';
import { Method, type MethodCode, type ReplyCode } from 'socksgate-client/protocol';
import { encodeMethodSelection, parseGreeting } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import { parseRequest, type Request } from 'socksgate-client/protocol';

/** What the handshake asks of whoever carries its bytes, one step at a time. */
export type HandshakeStep =
  /** Nothing to do until more bytes come. */
  | { readonly kind: 'more' }
  /** Send `reply` (the method selection, RFC 1928 §3); with NO_ACCEPTABLE, then close gently. */
  | { readonly kind: 'method'; readonly reply: Buffer; readonly method: MethodCode; readonly offered: readonly number[] }
  /** Check these credentials (RFC 1929), then call loginChecked(). */
  | { readonly kind: 'login'; readonly username: string; readonly password: Buffer }
  /** A request (RFC 1928 §4): the handshake is over; take() hands over what the client sent after it. */
  | { readonly kind: 'request'; readonly request: Request }
  /** Malformed input: answer with `reply` when there is one (a request's), then close. */
  | { readonly kind: 'error'; readonly message: string; readonly reply: ReplyCode | null };

type State = 'greeting' | 'login' | 'checking' | 'request' | 'done';

const MORE: HandshakeStep = { kind: 'more' };

/**
 * The server's side of the SOCKS5 handshake as a pure machine over bytes, without sockets or timers:
 * push() what arrives (in pieces of any size, several messages at once), then next() until it says
 * 'more'. One per connection, made with it: it holds no more than the bytes not yet read. The session feeds it from whatever carries the connection (a net.Socket or the native
 * helper), so there is one implementation of the handshake.
 */
export class Handshake {
  private state: State = 'greeting';
  private readonly reader = new ByteReader();

  /** Bytes held (not yet a whole message, or sent after the request). */
  get buffered(): number {
    return this.reader.length;
  }

  /** The phase, for log lines ("client closed during greeting"). */
  get phase(): 'greeting' | 'auth' | 'request' | 'done' {
    return this.state === 'login' || this.state === 'checking' ? 'auth' : this.state;
  }

  push(chunk: Buffer): void {
    this.reader.push(chunk);
  }

  /** The next step; `requireLogin` decides the method when the greeting is read (a reload may change it). */
  next(requireLogin: boolean): HandshakeStep {
    switch (this.state) {
      case 'greeting': {
        const greeting = this.reader.read(parseGreeting);
        if (greeting.status === 'more') return MORE;
        if (greeting.status === 'error') return this.fail(`bad greeting: ${greeting.error.message}`, null);
        const method = selectMethod(greeting.value.methods, requireLogin);
        this.state = method === Method.USERNAME_PASSWORD ? 'login' : method === Method.NO_AUTH ? 'request' : 'done';
        return { kind: 'method', reply: encodeMethodSelection(method), method, offered: greeting.value.methods };
      }
      case 'login': {
        const credentials = this.reader.read(parseCredentials);
        if (credentials.status === 'more') return MORE;
        if (credentials.status === 'error') return this.fail(`bad credentials message: ${credentials.error.message}`, null);
        this.state = 'checking';
        // A copy: the check runs after the bytes it came from may be gone (a transient chunk).
        return { kind: 'login', username: credentials.value.username, password: Buffer.from(credentials.value.password) };
      }
      case 'request': {
        const request = this.reader.read(parseRequest);
        if (request.status === 'more') return MORE;
        if (request.status === 'error') return this.fail(`bad request: ${request.error.message}`, request.error.reply);
        this.state = 'done';
        return { kind: 'request', request: request.value };
      }
      default:
        // Waiting for a login check, or over: bytes wait for take().
        return MORE;
    }
  }

  /** The login's outcome: the status reply to send (RFC 1929 §2); after a failure, close gently. */
  loginChecked(ok: boolean): Buffer {
    if (this.state === 'checking') this.state = ok ? 'request' : 'done';
    return encodeAuthStatus(ok);
  }

  /** Copies the bytes held, so that they outlive a transient chunk they were pushed from. */
  keep(): void {
    this.reader.keep();
  }

  /** Whatever the client sent after the request (optimistic data), emptying the buffer. */
  take(): Buffer {
    return this.reader.take();
  }

  private fail(message: string, reply: ReplyCode | null): HandshakeStep {
    this.state = 'done';
    return { kind: 'error', message, reply };
  }
}
