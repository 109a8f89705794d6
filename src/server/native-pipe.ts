import type { Socket } from 'node:net';
import { nativeTcp, type NativeTcp } from '../native/addon.js';

/** A Node socket's libuv handle, as far as taking its descriptor over needs it. */
interface TcpHandle {
  readonly fd?: number;
  readStop?: () => number;
  /** net.Socket's own flag: while true, its _read() never starts the handle reading again. */
  reading?: boolean;
}

/**
 * A CONNECT or BIND tunnel relayed by the native helper (native/tcp-relay.c): same contract as
 * relay() — half-close passed on, ends when both directions ended, at the first error or after
 * `idleMs` without a byte — but without Node's per-chunk buffers and write requests. The caller
 * still owns both sockets and destroys them after `done`.
 */
export class NativeTunnel {
  readonly done: Promise<string>;
  private resolveDone!: (reason: string) => void;
  private handle: unknown;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Bytes the client sent before the tunnel began (the helper writes them first; counted as up). */
  private readonly earlyBytes: number;
  /** The counts when the tunnel ended (the helper's are gone then). */
  private last: readonly [number, number] = [0, 0];

  private constructor(
    private readonly tcp: NativeTcp,
    client: number,
    target: number,
    early: Buffer | undefined,
    clientEnded: boolean,
    private readonly idleMs: number,
    adopt = false,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.earlyBytes = early?.length ?? 0;
    this.handle = tcp.tcpStart(this, client, target, early && early.length > 0 ? early : null, null, clientEnded, adopt);
    if (idleMs > 0) this.armIdle(idleMs);
  }

  /**
   * Takes the tunnel over, or returns null when it must stay in JS: no helper, a socket without a
   * descriptor, or bytes Node already holds (unsent writes, unread data, an end already read).
   */
  static start(client: Socket, target: Socket, options: { idleMs: number; early?: Buffer; clientEnded?: boolean }): NativeTunnel | null {
    const tcp = nativeTcp();
    if (tcp === null) return null;
    const handles = [client, target].map((s) => (s as unknown as { _handle?: TcpHandle | null })._handle);
    const [ch, th] = handles;
    if (!ch || !th || typeof ch.fd !== 'number' || ch.fd < 0 || typeof th.fd !== 'number' || th.fd < 0 || !ch.readStop || !th.readStop) return null;
    for (const s of [client, target]) {
      if (s.destroyed || s.writableLength > 0 || s.readableLength > 0 || s.readableEnded || s.writableEnded) return null;
    }
    // Node reads no more from either: from here every byte goes through the helper. The handles are
    // marked as reading so that nothing (a resume() queued earlier, a pipe) makes Node start them again.
    client.pause();
    target.pause();
    for (const h of [ch, th]) {
      h.readStop!();
      h.reading = true;
    }
    const tunnel = new NativeTunnel(tcp, ch.fd, th.fd, options.early, options.clientEnded ?? false, options.idleMs);
    // Node no longer reads or writes these sockets, so they close only when something destroys them
    // (the session ends, an upstream is taken out): the helper's duplicates must then let go too.
    for (const [socket, side] of [[client, 'client'], [target, 'target']] as const) {
      let error: string | null = null;
      socket.on('error', (e: NodeJS.ErrnoException) => (error ??= `${side} ${e.code ?? e.message}`));
      socket.once('close', () => tunnel.finish(error ?? `${side} closed`));
    }
    return tunnel;
  }

  /**
   * A tunnel on two descriptors no Node socket owns (the native front door's): the helper takes them
   * over, and closing the tunnel closes the connections. Null (the descriptors untouched) when it cannot.
   */
  static fromDescriptors(client: number, target: number, idleMs: number): NativeTunnel | null {
    const tcp = nativeTcp();
    if (tcp === null) return null;
    try {
      return new NativeTunnel(tcp, client, target, undefined, false, idleMs, true);
    } catch {
      return null;
    }
  }

  /** Bytes client → target (with the early ones) and target → client so far. */
  traffic(): readonly [number, number] {
    if (this.closed) return this.last;
    const [up, down] = this.tcp.tcpInfo(this.handle);
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

  /** Called by the helper when the tunnel ended by itself. */
  ended(reason: string): void {
    this.finish(reason);
  }

  /** Stops the helper's work on the tunnel (the sockets stay for their owner to destroy). */
  close(): void {
    this.finish('closed');
  }

  finish(reason: string): void {
    if (this.closed) return;
    this.last = this.traffic();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.tcp.tcpClose(this.handle);
    this.resolveDone(reason);
  }

  private armIdle(delay: number): void {
    this.timer = setTimeout(() => {
      const quiet = this.tcp.tcpInfo(this.handle)[2];
      if (quiet >= this.idleMs) this.finish('idle');
      else this.armIdle(this.idleMs - quiet);
    }, delay);
    this.timer.unref();
  }
}
