// Thin typed wrappers of the helper's TCP side (native/tcp-conn.c, native/tcp-tunnel.c): listeners,
// connections and tunnels. They move bytes; what the bytes mean is decided in src/server.
import { closeSync } from 'node:fs';
import { Socket } from 'node:net';
import { nativeAddon, type Addon, type ConnOwner, type ListenerOwner, type TunnelOwner } from './addon.js';

/** What a connection's bytes and end go to (a session). */
export interface ConnEvents {
  /** Bytes from the connection: a view of the helper's buffer, valid only during the call (copy what outlives it). */
  connBytes(chunk: Buffer): void;
  /** 'end' for the peer's FIN, else an errno code ('ECONNRESET', 'EPOLL …'). */
  connEnd(reason: string): void;
}

let arena: Buffer | null = null;

/** The first `length` bytes of this thread's connection arena (the helper reads into it for JS). */
export function arenaBytes(length: number): Buffer {
  arena ??= Buffer.from(nativeAddon()!.connArena());
  return arena.subarray(0, length);
}

/** Makes a net.Socket of a descriptor the helper gave up (Node owns it from here). Null when it cannot. */
function socketOf(fd: number, queued: Buffer | null): Socket | null {
  try {
    const socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    socket.setNoDelay(true);
    if (queued !== null) socket.write(queued);
    return socket;
  } catch {
    closeSync(fd);
    return null;
  }
}

/** A TCP connection the helper holds: accepted by it, adopted from Node, or connected by it. */
export class NativeConn implements ConnOwner {
  /** Set by whoever reads the connection. */
  events: ConnEvents | null = null;
  private handle: unknown;
  private connecting: ((result: NativeConn | string) => void) | null = null;
  /** An outbound connection's own address, once connected. */
  localHost = '';
  localPort = 0;

  constructor(
    private readonly addon: Addon,
    handle: unknown,
  ) {
    this.handle = handle;
  }

  /** Takes over (a duplicate of) a libuv TCP handle's descriptor (always non-blocking); null when the helper cannot. */
  static adopt(fd: number, events: ConnEvents | null): NativeConn | null {
    const addon = nativeAddon();
    if (addon === null) return null;
    const conn = new NativeConn(addon, null);
    conn.events = events;
    try {
      conn.handle = addon.connAdopt(conn, fd, true);
    } catch {
      return null;
    }
    return conn;
  }

  /** Connects to host:port (an IP address): the connection, or the errno code of the failure. */
  static connect(host: string, port: number, timeoutMs: number): Promise<NativeConn | string> {
    const addon = nativeAddon()!;
    const conn = new NativeConn(addon, null);
    let result: unknown;
    try {
      result = addon.connConnect(conn, host, port, timeoutMs);
    } catch (error) {
      return Promise.resolve((error as NodeJS.ErrnoException).code ?? 'EINVAL');
    }
    if (typeof result === 'string') return Promise.resolve(result);
    conn.handle = result;
    return new Promise((resolve) => (conn.connecting = resolve));
  }

  get open(): boolean {
    return this.handle !== null;
  }

  /** The helper's handle, for a tunnel to take. */
  get raw(): unknown {
    return this.handle;
  }

  /** Writes now (what the socket does not take is queued by the helper); null, or the errno code. */
  write(bytes: Buffer): string | null {
    return this.handle === null ? 'EBADF' : this.addon.connWrite(this.handle, bytes);
  }

  /** Reads on or pauses. */
  setReading(on: boolean): void {
    if (this.handle !== null) this.addon.connRead(this.handle, on);
  }

  /** Sends what is queued and a FIN, discards input until the peer's FIN or lingerMs, then closes. */
  end(lingerMs: number): void {
    if (this.handle === null) return;
    this.addon.connEnd(this.handle, lingerMs);
    this.handle = null;
    this.events = null;
  }

  /** The connection as a net.Socket from here on (null if the helper no longer holds it). */
  take(): Socket | null {
    if (this.handle === null) return null;
    const taken = this.addon.connTake(this.handle);
    this.handle = null;
    this.events = null;
    return taken === null ? null : socketOf(taken[0], taken[1]);
  }

  /** The connection's own address (getsockname); throws EBADF once closed. */
  localAddress(): { host: string; port: number } {
    const [host, port] = this.addon.connLocal(this.handle);
    return { host, port };
  }

  /** TCP keepalive probes after `ms` of quiet, as net.Socket's setKeepAlive(true, ms). */
  setKeepAlive(ms: number): void {
    if (this.handle !== null) this.addon.connKeepAlive(this.handle, ms);
  }

  close(): void {
    if (this.handle === null) return;
    this.addon.connClose(this.handle);
    this.handle = null;
    this.events = null;
  }

  /** A tunnel took the connection: it is the tunnel's to close. */
  given(): void {
    this.handle = null;
    this.events = null;
  }

  onData(length: number, reason: string | null): void {
    if (reason === null) this.events?.connBytes(arenaBytes(length));
    else this.events?.connEnd(reason);
  }

  onConnected(code: string | null, host: string | null, port: number): void {
    const resolve = this.connecting;
    this.connecting = null;
    if (code === null) {
      this.localHost = host ?? '';
      this.localPort = port;
      resolve?.(this);
    } else {
      this.close();
      resolve?.(code);
    }
  }
}

/** The helper accepting on (a duplicate of) a listening descriptor. */
export class NativeListener {
  private handle: unknown;

  private constructor(
    private readonly addon: Addon,
    owner: ListenerOwner,
    fd: number,
  ) {
    this.handle = addon.listen(owner, fd);
  }

  /** Null without the helper, or when it cannot watch the descriptor. */
  static open(owner: ListenerOwner, fd: number): NativeListener | null {
    const addon = nativeAddon();
    if (addon === null) return null;
    try {
      return new NativeListener(addon, owner, fd);
    } catch {
      return null;
    }
  }

  /** Stops accepting at once; idempotent. */
  close(): void {
    if (this.handle === null) return;
    this.addon.listenClose(this.handle);
    this.handle = null;
  }
}

/** A Node socket's libuv handle, as far as taking its descriptor over needs it. */
interface TcpHandle {
  readonly fd?: number;
  readStop?: () => number;
  /** net.Socket's own flag: while true, its _read() never starts the handle reading again. */
  reading?: boolean;
}

/**
 * A CONNECT or BIND tunnel relayed by the helper: half-close passed on, ends when both directions
 * ended, at the first error or after `idleMs` without a byte, without Node's per-chunk buffers and
 * write requests.
 */
export class NativeTunnel implements TunnelOwner {
  readonly done: Promise<string>;
  private resolveDone!: (reason: string) => void;
  private handle: unknown = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Bytes the client sent before the tunnel began (the helper writes them first; counted as up). */
  private earlyBytes: number;
  /** The counts when the tunnel ended (the helper's are gone then). */
  private last: readonly [number, number] = [0, 0];

  private constructor(
    private readonly addon: Addon,
    early: Buffer | undefined,
    private readonly idleMs: number,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.earlyBytes = early?.length ?? 0;
  }

  /**
   * Two Node sockets' tunnel, on duplicates of their descriptors (the caller still owns and destroys
   * the sockets after `done`). Null when it must stay in JS: no helper, a socket without a
   * descriptor, or bytes Node already holds (unsent writes, unread data, an end already read).
   */
  static start(client: Socket, target: Socket, options: { idleMs: number; early?: Buffer; clientEnded?: boolean }): NativeTunnel | null {
    const addon = nativeAddon();
    if (addon === null) return null;
    const [ch, th] = [client, target].map((s) => (s as unknown as { _handle?: TcpHandle | null })._handle);
    if (!ch || !th || typeof ch.fd !== 'number' || ch.fd < 0 || typeof th.fd !== 'number' || th.fd < 0 || !ch.readStop || !th.readStop) return null;
    for (const s of [client, target]) {
      if (s.destroyed || s.writableLength > 0 || s.readableLength > 0 || s.readableEnded || s.writableEnded) return null;
    }
    const tunnel = new NativeTunnel(addon, options.early, options.idleMs);
    try {
      tunnel.handle = addon.tunnelFromSockets(tunnel, ch.fd, th.fd, options.early && options.early.length > 0 ? options.early : null, options.clientEnded ?? false);
    } catch {
      return null;
    }
    // Node reads no more from either: every byte goes through the helper. The handles are marked as
    // reading so that nothing (a resume() queued earlier, a pipe) makes Node start them again.
    client.pause();
    target.pause();
    for (const h of [ch, th]) {
      h.readStop!();
      h.reading = true;
    }
    // The sockets close only when something destroys them (the session ends, an upstream is taken
    // out): the helper's duplicates must then let go too.
    for (const [socket, side] of [[client, 'client'], [target, 'target']] as const) {
      let error: string | null = null;
      socket.on('error', (e: NodeJS.ErrnoException) => (error ??= `${side} ${e.code ?? e.message}`));
      socket.once('close', () => tunnel.finish(error ?? `${side} closed`));
    }
    tunnel.armIdle(options.idleMs);
    return tunnel;
  }

  /**
   * A tunnel between two connections the helper holds: it takes them over (closing the tunnel closes
   * them). Bytes queued on the client connection go first, then `reply` (written in the same call),
   * and `early` to the target first.
   */
  static fromConns(client: NativeConn, target: NativeConn, options: { idleMs: number; early?: Buffer; clientEnded?: boolean; reply?: Buffer }): NativeTunnel | null {
    const addon = nativeAddon();
    if (addon === null || !client.open || !target.open) return null;
    const tunnel = new NativeTunnel(addon, options.early, options.idleMs);
    try {
      tunnel.handle = addon.tunnelOpen(tunnel, client.raw, target.raw, options.early && options.early.length > 0 ? options.early : null, options.clientEnded ?? false,
        options.reply ?? null);
    } catch {
      return null;
    }
    client.given();
    target.given();
    tunnel.armIdle(options.idleMs);
    return tunnel;
  }

  /** Bytes client → target (with the early ones) and target → client so far. */
  traffic(): readonly [number, number] {
    if (this.closed) return this.last;
    const [up, down] = this.addon.tunnelInfo(this.handle);
    return [up + this.earlyBytes, down];
  }

  // The session reads these as its meter and its status-page details.
  get up(): number {
    return this.traffic()[0];
  }

  get down(): number {
    return this.traffic()[1];
  }

  describe(): Record<string, unknown> {
    return { relay: 'native' };
  }

  /** Called by the helper when the tunnel ended by itself, with its counts; it closes itself after the call. */
  ended(reason: string, up: number, down: number): void {
    if (this.closed) return;
    this.last = [up + this.earlyBytes, down];
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.resolveDone(reason);
  }

  /** Stops the tunnel (a tunnel of connections closes them; sockets stay for their owner). */
  close(): void {
    this.finish('closed');
  }

  finish(reason: string): void {
    if (this.closed) return;
    this.last = this.traffic();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.addon.tunnelClose(this.handle);
    this.resolveDone(reason);
  }

  private armIdle(delay: number): void {
    if (this.idleMs <= 0 || this.closed) return;
    this.timer = setTimeout(() => {
      if (this.closed) return;
      const quiet = this.addon.tunnelInfo(this.handle)[2];
      if (quiet >= this.idleMs) this.finish('idle');
      else this.armIdle(this.idleMs - quiet);
    }, delay);
    this.timer.unref();
  }
}
