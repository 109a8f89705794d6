import { closeSync } from 'node:fs';
import { Socket, type Server } from 'node:net';
import { nativeFrontApi, type FrontOwner, type FrontSessionOwner, type NativeFrontApi } from '../native/addon.js';

/** What the front door hands the server. */
export interface FrontHooks {
  /** Every connection the listener accepted (counted here, as Node's 'connection' would be). */
  accepted(): void;
  /**
   * A connection the front hands over: a net.Socket on its descriptor and the bytes read so far
   * (`greeted`: the no-authentication method reply was already sent).
   */
  adopt(socket: Socket, early: Buffer, greeted: boolean, elapsedMs: number): void;
  /** A complete CONNECT request to an IP address, the greeting answered: decide and go on with `conn`. */
  request(conn: FrontConn, clientHost: string, clientPort: number, host: string, port: number): void;
}

/** Node's libuv handles, as far as the front needs them. */
interface ListenHandle {
  fd?: number;
  onconnection?: (status: number, client?: { fd?: number; close(): void }) => void;
}

/**
 * The native front door (native/tcp-front.c) on one listener. Node still accepts (its cluster
 * sharing, address() and close() are untouched), but each accepted descriptor goes to the helper
 * before a net.Socket exists: the helper answers the no-authentication greeting and reads the request
 * itself, and JS hears of the connection once, with a complete CONNECT to an IP address, or gets it
 * back (as a net.Socket with the bytes read so far) for anything else.
 */
export class NativeFront implements FrontOwner {
  private handle: unknown;

  private constructor(
    private readonly api: NativeFrontApi,
    private readonly hooks: FrontHooks,
    open: boolean,
    handoffMs: number,
  ) {
    this.handle = api.frontCreate(this, open, handoffMs);
  }

  /**
   * Puts a front door on a listening server, or returns null where it cannot: no helper, or a handle
   * without the hook. `open`: clients may go without authentication (no users configured).
   */
  static attach(server: Server, hooks: FrontHooks, options: { open: boolean; handoffMs: number }): NativeFront | null {
    const api = nativeFrontApi();
    const handle = (server as unknown as { _handle?: ListenHandle | null })._handle;
    if (api === null || !handle || typeof handle.onconnection !== 'function') return null;
    const nodeOnConnection = handle.onconnection;
    const front = new NativeFront(api, hooks, options.open, options.handoffMs);
    handle.onconnection = function (this: ListenHandle, status, client) {
      const fd = client?.fd;
      if (front.handle === null || status < 0 || client === undefined || typeof fd !== 'number' || fd < 0) {
        nodeOnConnection.call(this, status, client);
        return;
      }
      hooks.accepted();
      // The helper works on a duplicate; Node's handle (and its descriptor) closes at once.
      if (front.api.frontAdopt(front.handle, fd)) client.close();
      else nodeOnConnection.call(this, status, client);
    };
    // The helper accepts on the listener itself as well: a connection it takes costs no Node handle, no
    // JS call and no dup(). Node's watcher still wakes for the listener and takes what the helper did
    // not (then through onconnection above); either way the connection is served alike.
    if (typeof handle.fd === 'number' && handle.fd >= 0) api.frontListen(front.handle, handle.fd);
    return front;
  }

  /** Called by the helper: it accepted a connection itself. */
  accepted(): void {
    this.hooks.accepted();
  }

  /** Whether clients may go without authentication (a reload that adds users turns it off). */
  setOpen(open: boolean): void {
    if (this.handle !== null) this.api.frontSetOpen(this.handle, open);
  }

  /** Adopts no more; the connections not yet given to JS close. Idempotent. */
  close(): void {
    if (this.handle === null) return;
    const handle = this.handle;
    this.handle = null;
    this.api.frontClose(handle);
  }

  /** Called by the helper: the connection is JS's from here. */
  handoff(fd: number, bytes: Buffer, greeted: boolean, elapsedMs: number): void {
    let socket: Socket;
    try {
      socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    } catch {
      closeSync(fd);
      return;
    }
    socket.setNoDelay(true);
    this.hooks.adopt(socket, bytes, greeted, elapsedMs);
  }

  /** Called by the helper with a complete CONNECT request to an IP address. */
  request(conn: unknown, clientHost: string, clientPort: number, host: string, port: number): void {
    this.hooks.request(new FrontConn(this.api, conn), clientHost, clientPort, host, port);
  }
}

/**
 * What a session sees of its connection while the front door still holds it: `connected` (the
 * success reply is sent: take both descriptors now and return true, or the helper closes them) and
 * `connectFailed` (answer with reply() or abort()).
 */
export type FrontConnOwner = FrontSessionOwner;

/** A connection the front door holds for a session, until it connects, replies or aborts. */
export class FrontConn implements FrontSessionOwner {
  private conn: unknown;
  private owner: FrontConnOwner | null = null;

  constructor(
    private readonly api: NativeFrontApi,
    conn: unknown,
  ) {
    this.conn = conn;
  }

  /** Connects to host:port (an IP); null when under way, else the errno code of an immediate failure. */
  connect(owner: FrontConnOwner, host: string, port: number, timeoutMs: number): string | null {
    if (this.conn === null) return 'EBADF';
    this.owner = owner;
    return this.api.frontConnect(this.conn, this, host, port, timeoutMs);
  }

  /** Sends a failure reply and lets the helper close the connection gently. */
  reply(code: number): void {
    if (this.conn === null) return;
    this.api.frontReply(this.conn, code);
    this.conn = null;
  }

  /**
   * Takes the connection back from the helper as a net.Socket (before any connect): for a session the
   * front cannot finish itself. Null if the helper no longer holds it.
   */
  take(): Socket | null {
    if (this.conn === null) return null;
    const fd = this.api.frontTake(this.conn);
    this.conn = null;
    if (fd < 0) return null;
    try {
      const socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
      socket.setNoDelay(true);
      return socket;
    } catch {
      closeSync(fd);
      return null;
    }
  }

  /** Closes the connection now. */
  abort(): void {
    if (this.conn === null) return;
    this.api.frontAbort(this.conn);
    this.conn = null;
  }

  connected(clientFd: number, targetFd: number, boundHost: string, boundPort: number): boolean {
    // The helper has released the connection.
    this.conn = null;
    return this.owner?.connected(clientFd, targetFd, boundHost, boundPort) ?? false;
  }

  connectFailed(code: string): void {
    this.owner?.connectFailed(code);
  }
}
