import type { Server } from 'node:net';
import { nativeAddon, type ConnOwner, type ListenerOwner } from '../native/addon.js';
import { arenaBytes, NativeConn, NativeListener } from '../native/tcp.js';

/** What the front door hands the server: each connection, before a byte of it is interpreted. */
export interface FrontHooks {
  /**
   * A connection the helper holds, with the bytes that came with it (often the greeting; valid only
   * during the call). The server makes its session (which sets `conn.events`) or closes it; returns
   * whether it took it.
   */
  connection(conn: NativeConn, host: string, port: number, bytes: Buffer | null): boolean;
}

/** Node's libuv handles, as far as the front needs them. */
interface ListenHandle {
  fd?: number;
  onconnection?: (status: number, client?: AcceptedHandle) => void;
}
interface AcceptedHandle {
  fd?: number;
  close(): void;
  getpeername?(out: { address?: string; port?: number }): number;
}

/**
 * The native front door on one listener: the helper accepts on (a duplicate of) the listening
 * descriptor itself, and a connection Node's own watcher wins is handed to the helper before a
 * net.Socket exists. Either way the session reads and writes the connection through the helper
 * (src/native/tcp.ts) and decides everything itself; a command that needs a stream takes the
 * connection as a net.Socket. Node's listener stays for cluster sharing, address() and close().
 */
export class NativeFront implements ListenerOwner {
  private listener: NativeListener | null = null;
  private closed = false;

  private constructor(private readonly hooks: FrontHooks) {}

  /** Puts a front door on a listening server, or returns null where it cannot (no helper, no hook). */
  static attach(server: Server, hooks: FrontHooks): NativeFront | null {
    const handle = (server as unknown as { _handle?: ListenHandle | null })._handle;
    if (nativeAddon() === null || !handle || typeof handle.onconnection !== 'function') return null;
    const nodeOnConnection = handle.onconnection;
    const front = new NativeFront(hooks);
    handle.onconnection = function (this: ListenHandle, status, client) {
      const fd = client?.fd;
      if (front.closed || status < 0 || client === undefined || typeof fd !== 'number' || fd < 0) {
        nodeOnConnection.call(this, status, client);
        return;
      }
      // Shaped as getpeername() fills it: no new hidden class per connection.
      const peer: { address?: string; family?: string; port?: number } = { address: undefined, family: undefined, port: undefined };
      client.getpeername?.(peer);
      const conn = NativeConn.adopt(fd, null);
      if (conn === null) {
        nodeOnConnection.call(this, status, client);
        return;
      }
      // The helper works on a duplicate; Node's handle (and its descriptor) closes at once.
      client.close();
      if (!hooks.connection(conn, peer.address ?? '', peer.port ?? 0, null)) conn.close();
    };
    if (typeof handle.fd === 'number' && handle.fd >= 0) front.listener = NativeListener.open(front, handle.fd);
    return front;
  }

  /** Called by the helper with a connection it accepted. */
  accepted(raw: unknown, host: string, port: number, length: number): ConnOwner | null {
    const conn = new NativeConn(nativeAddon()!, raw);
    if (this.closed || !this.hooks.connection(conn, host, port, length > 0 ? arenaBytes(length) : null)) {
      conn.close();
      return null;
    }
    return conn.open ? conn : null;
  }

  /** Accepts no more (the helper's duplicate of the listener closes now). Idempotent. */
  close(): void {
    this.closed = true;
    this.listener?.close();
    this.listener = null;
  }
}
