import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { RateBuckets } from '../policy/limits.js';
import { NO_RATES } from '../policy/gate.js';
import { overLimit, type OverLimit } from '../policy/gate.js';
import type { SharedClaim } from '../policy/store.js';
import type { Closable, CommandContext, Describable, Metered, ServerStats, SessionContext } from './context.js';
import type { UserStore } from './users.js';
import { NativeConn, type ConnEvents } from '../native/tcp.js';
import { Handshake } from './handshake.js';
import { runConnect } from './connect.js';
import { addressFromHost, formatAddress, type SocksAddress } from 'socksgate-client/protocol';
import { Command, describeCommand, describeMethod, describeReply, Method, Reply, type ReplyCode } from 'socksgate-client/protocol';
import { encodeReply, type Request } from 'socksgate-client/protocol';
import { runAssociate } from './associate.js';
import { runUdpOverTcp } from './udp-over-tcp.js';

const UNSPECIFIED: SocksAddress = { host: '0.0.0.0', port: 0, type: 'ipv4' };
// Bytes a client may send ahead while its command is being set up (optimistic data), before we stop reading.
const EARLY_DATA_LIMIT = 64 * 1024;
// After a failure reply, how long the client gets to read it and close before we drop the connection.
const LINGER_MS = 1000;

// Where a client socket keeps its session, for the shared listeners.
const SESSION = Symbol('session');
type SessionSocket = Socket & { [SESSION]: Session };

type Phase = 'greeting' | 'auth' | 'verifying' | 'request' | 'command' | 'relaying' | 'associated' | 'closing';

/**
 * One client TCP connection, from greeting to close. It owns the client connection (a net.Socket, or
 * a connection the native helper holds), its timers and everything a command hands to `own()`
 * (target socket, BIND listener); `close()` releases them all. The handshake is read here whichever
 * carries the bytes.
 */
export class Session implements ConnEvents, CommandContext {
  readonly client: SocksAddress;
  user: string | null = null;
  command = '-';
  target = '-';
  up = 0;
  down = 0;
  /** The rate buckets of this session's client address and user (none when unlimited). */
  rates: readonly RateBuckets[] = NO_RATES;
  /**
   * Set by a command that relays: the byte counts (client→target, target→client), read at close and
   * by status pages; a function, or an object that has them (an association: no closure per session).
   */
  meter: (() => readonly [number, number]) | Metered | null = null;

  private phase: Phase = 'greeting';
  private readonly handshake = new Handshake();
  private readonly started = performance.now();
  // Made on the first own(): one slot for the usual single resource (an array grows to 17 slots on its first push).
  private releases: Array<(() => void) | Closable> | null = null;
  /** The gate counts this session against the session caps (enter() admitted it; leave() at close). */
  private counted = false;
  /** This session's claims on the caps across the fleet (when a store is shared); released at close. */
  private shared: SharedClaim | null = null;
  // Made when first needed: an idle association should cost as little memory as possible.
  private abort: AbortController | null = null;
  private logger: Logger | null = null;
  /** The linger after a failure reply, or a wait before a login check (the handshake's deadline is the server's: ctx.handshakes). */
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private clientEnded = false;
  private result = 'ok';
  /** The client as a net.Socket; null while the native helper holds the connection (`conn`). */
  private sock: Socket | null;
  /**
   * The client connection while the native helper holds it: accepted by the helper, or a UDP
   * ASSOCIATE's control connection handed to it (about 1.4 KB less per association than a net.Socket).
   */
  private conn: NativeConn | null = null;
  /** The control connection is the helper's (handOverControl()). */
  private controlNative = false;
  /** The peer's address as the helper reported it (a net.Socket's own remoteAddress otherwise). */
  private peerHost = '';

  /**
   * A session on a client connection, from its greeting on: a net.Socket, or a connection the native
   * helper holds (its address given; the bytes that came with it are fed with connBytes()).
   */
  constructor(
    client: Socket | NativeConn,
    readonly ctx: SessionContext,
    private readonly onClosed: (session: Session) => void,
    remote?: { host: string; port: number },
  ) {
    ctx.handshakes.add(this, this.started);
    if (client instanceof NativeConn) {
      this.sock = null;
      this.conn = client;
      this.peerHost = remote?.host ?? '';
      this.client = remote === undefined ? UNSPECIFIED : addressFromHost(remote.host, remote.port);
      client.events = this;
      return;
    }
    this.sock = client;
    this.client = addressFromHost(client.remoteAddress ?? '0.0.0.0', client.remotePort ?? 0);
    this.listen(client);
  }

  private listen(socket: Socket): void {
    // The listeners are shared by every session and find theirs on the socket: no four closures per session.
    (socket as SessionSocket)[SESSION] = this;
    socket.on('data', Session.onData);
    socket.on('end', Session.onEnd);
    socket.on('error', Session.onError);
    // 'on', not 'once': a socket emits 'close' once, and once() costs a wrapper object and a bound function per session.
    socket.on('close', Session.onSocketClose);
  }

  /** Called by the helper: bytes from the client connection it holds (a view valid during the call). */
  connBytes(chunk: Buffer): void {
    this.data(chunk);
    // What the handshake keeps for later (a partial message, data sent ahead) must not be the view.
    this.handshake.keep();
  }

  /** Called by the helper: the client connection it holds ended ('end': the client's FIN). */
  connEnd(reason: string): void {
    if (reason === 'end') this.end();
    else this.close(`client error ${reason}`);
  }

  /**
   * The client connection while the native helper holds it, for a command that can carry on through
   * the helper (a CONNECT); null once it is a net.Socket.
   */
  get nativeClient(): NativeConn | null {
    return this.controlNative ? null : this.conn;
  }

  /**
   * The client socket (a command's setup reads it; never after handOverControl()). A connection the
   * helper holds becomes a net.Socket here, for commands that need a stream.
   */
  get socket(): Socket {
    if (this.sock === null && this.conn !== null && !this.controlNative) {
      const socket = this.conn.take();
      this.conn = null;
      if (socket === null) throw new Error('the client connection is gone');
      this.sock = socket;
      this.listen(socket);
      if (this.phase === 'command' || this.phase === 'verifying') {
        if (this.handshake.buffered > EARLY_DATA_LIMIT) socket.pause();
      }
    }
    if (this.sock === null) throw new Error('the control connection was handed to the native helper');
    return this.sock;
  }

  get peerAddress(): string {
    return this.sock?.remoteAddress ?? this.peerHost;
  }

  localAddress(): string {
    if (this.conn !== null) return this.conn.localAddress().host;
    return this.sock?.localAddress ?? '';
  }

  setKeepAlive(ms: number): void {
    if (this.conn !== null) this.conn.setKeepAlive(ms);
    else this.sock?.setKeepAlive(true, ms);
  }

  /** Writes handshake bytes to the client, on whichever carries the connection. */
  private send(bytes: Buffer, onSent?: () => void): void {
    if (this.conn !== null) {
      if (this.conn.write(bytes) === null) onSent?.();
      return;
    }
    this.sock?.write(bytes, onSent === undefined ? undefined : (error) => error || onSent());
  }

  private pauseClient(): void {
    if (this.conn !== null) this.conn.setReading(false);
    else this.sock?.pause();
  }

  private resumeClient(): void {
    if (this.conn !== null) this.conn.setReading(true);
    else this.sock?.resume();
  }

  /** The server's logger with this client's address on every line. */
  get log(): Logger {
    return (this.logger ??= this.ctx.log.child({ client: formatAddress(this.client) }));
  }

  /** Debug lines cost nothing (no child logger made) unless debug is on. */
  private debug(fields: Record<string, unknown>, message: string): void {
    if (this.ctx.log.isLevelEnabled('debug')) this.log.debug(fields, message);
  }

  /** How the session ended ('ok' or what ended it); meaningful once closed. */
  get outcome(): string {
    return this.result;
  }

  /** When the session began (performance.now()). */
  get startedAt(): number {
    return this.started;
  }

  /** Set by a command: what a status page shows about it beyond the common fields (a function, or an object that describes itself). */
  details: (() => Record<string, unknown>) | Describable | null = null;

  /** Bytes client→target and target→client so far, from the command's meter (0 before a command relays). */
  traffic(): readonly [number, number] {
    const meter = this.meter;
    if (meter === null) return [0, 0];
    return typeof meter === 'function' ? meter() : [meter.up, meter.down];
  }

  /** The command's own fields for a status page (none when it set no details). */
  describe(): Record<string, unknown> {
    const details = this.details;
    const own = details === null ? {} : typeof details === 'function' ? details() : details.describe();
    return this.controlNative ? { ...own, control: 'native' } : own;
  }

  /** Ends the session on a timeout of the given kind, counted. */
  timedOut(kind: keyof ServerStats['timeouts']): void {
    if (this.closed) return;
    this.ctx.stats.timeouts[kind]++;
    this.close(`${kind} timeout`);
  }

  /** Aborted when the session closes: pending dials and waits stop. */
  get signal(): AbortSignal {
    this.abort ??= new AbortController();
    if (this.closed && !this.abort.signal.aborted) this.abort.abort(new Error(`session closed: ${this.result}`));
    return this.abort.signal;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Hands a resource to this session: `release` runs (or its close() is called) once, when the session closes. */
  own(release: (() => void) | Closable): void {
    if (this.closed) runRelease(release);
    else if (this.releases === null) this.releases = [release];
    else this.releases.push(release);
  }

  /** Sends a reply (RFC 1928 §6); `onSent` runs once it is written. */
  reply(code: ReplyCode, bound: SocksAddress = UNSPECIFIED, onSent?: () => void): void {
    const bytes = this.replyBytes(code, bound);
    if (bytes !== null) this.send(bytes, onSent);
  }

  /** A reply's bytes for whoever writes them (a native tunnel, as it starts); null once closed. */
  replyBytes(code: ReplyCode, bound: SocksAddress = UNSPECIFIED): Buffer | null {
    if (this.closed || (this.sock === null && this.conn === null)) return null;
    // Checked first: the fields' strings cost more than the rest of a reply.
    if (this.ctx.log.isLevelEnabled('debug')) this.debug({ reply: describeReply(code), bound: formatAddress(bound) }, 'reply');
    return encodeReply(code, bound);
  }

  /** Sends a failure reply, then closes once the client has had a moment to read it. */
  fail(code: ReplyCode, result: string): void {
    this.reply(code);
    this.closeGently(result);
  }

  /**
   * Hands the client socket over to a relay: returns the bytes the client sent ahead and whether it
   * has already half-closed. From here the relay reads the socket and the command closes the session
   * when the relay ends.
   */
  detach(): { early: Buffer; ended: boolean } {
    this.phase = 'relaying';
    if (this.conn !== null) {
      // The helper's connection: a tunnel takes it over; nothing more comes here.
      this.conn.events = null;
      return { early: this.handshake.take(), ended: this.clientEnded };
    }
    this.socket.off('data', Session.onData);
    this.socket.off('end', Session.onEnd);
    this.socket.off('close', Session.onSocketClose);
    this.socket.pause();
    return { early: this.handshake.take(), ended: this.clientEnded };
  }

  /**
   * UDP ASSOCIATE: from now on the control connection only keeps the association alive. Anything
   * the client sends on it is discarded; its end (FIN, RST or error) ends the session (RFC 1928 §7).
   */
  holdControl(): void {
    this.phase = 'associated';
    this.handshake.take();
    this.resumeClient();
  }

  /**
   * UDP ASSOCIATE, once the reply is written: where the native helper is loaded it watches the control
   * connection (discarding input, reporting its end) and the net.Socket with its handle is let go —
   * about 1.4 KB less per association. Otherwise nothing changes.
   */
  handOverControl(): void {
    if (this.closed || this.phase !== 'associated') return;
    if (this.conn !== null) {
      this.controlNative = true;
      return;
    }
    const socket = this.sock;
    const fd = (socket as unknown as { _handle?: { fd?: number } | null } | null)?._handle?.fd;
    if (socket === null || typeof fd !== 'number' || fd < 0 || socket.destroyed || socket.writableLength > 0) return;
    const conn = NativeConn.adopt(fd, this);
    if (conn === null) return;
    socket.off('data', Session.onData);
    socket.off('end', Session.onEnd);
    socket.off('close', Session.onSocketClose);
    socket.off('error', Session.onError);
    // Closes Node's descriptor only: the helper's duplicate keeps the connection open.
    socket.destroy();
    this.sock = null;
    this.conn = conn;
    this.controlNative = true;
  }

  close(result?: string): void {
    if (this.closed) return;
    this.closed = true;
    // After a failure reply (closeGently), the client's own close or reset says nothing new: the failure stays the result.
    if (result !== undefined && this.phase !== 'closing') this.result = result;
    this.phase = 'closing';
    this.ctx.handshakes.remove(this);
    if (this.timer) clearTimeout(this.timer);
    this.abort?.abort(new Error(`session closed: ${this.result}`));
    // The session counts first, so a client may come back as soon as its session is gone.
    if (this.counted) this.ctx.gate.leave(this.client.host, this.user, this.rates);
    this.counted = false;
    this.shared?.release();
    this.shared = null;
    const releases = this.releases;
    this.releases = null;
    if (releases !== null) {
      for (const release of releases) {
        try {
          runRelease(release);
        } catch (error) {
          this.log.warn({ err: error }, 'releasing a session resource failed');
        }
      }
    }
    this.sock?.destroy();
    this.conn?.close();
    this.conn = null;
    if (this.meter) [this.up, this.down] = this.traffic();
    this.ctx.stats.sessionsEnded[this.command] = (this.ctx.stats.sessionsEnded[this.command] ?? 0) + 1;
    // Checked first: the session's child logger costs more to make than the rest of a short session's close.
    if (this.ctx.log.isLevelEnabled('info')) {
      const fields = { user: this.user, command: this.command, target: this.target, up: this.up, down: this.down, ms: Math.round(performance.now() - this.started), result: this.result };
      this.log.info(fields, 'session end');
    }
    this.onClosed(this);
  }

  private closeGently(result: string): void {
    if (this.conn !== null) {
      // The helper half-closes, drains and closes it by itself (it owns it from here).
      this.conn.end(LINGER_MS);
      this.conn = null;
      return this.close(result);
    }
    if (this.sock === null) return this.close(result);
    this.result = result;
    this.phase = 'closing';
    // Half-close and keep draining: closing a socket with unread input sends RST, and an RST can
    // destroy the reply before the client reads it.
    this.socket.end();
    this.socket.resume();
    this.ctx.handshakes.remove(this);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.close(), LINGER_MS);
  }

  private static onData(this: Socket, chunk: Buffer): void {
    (this as SessionSocket)[SESSION].data(chunk);
  }

  private static onEnd(this: Socket): void {
    (this as SessionSocket)[SESSION].end();
  }

  private static onSocketClose(this: Socket): void {
    (this as SessionSocket)[SESSION].socketClosed();
  }

  private static onError(this: Socket, error: NodeJS.ErrnoException): void {
    (this as SessionSocket)[SESSION].close(`client error ${error.code ?? error.message}`);
  }

  private data(chunk: Buffer): void {
    if (this.phase === 'closing' || this.phase === 'associated') return;
    this.handshake.push(chunk);
    if (this.phase === 'command' || this.phase === 'verifying') {
      if (this.handshake.buffered > EARLY_DATA_LIMIT) this.pauseClient();
      return;
    }
    this.advance();
  }

  private end(): void {
    if (this.phase === 'closing') this.close();
    // A client may half-close right after its request (RFC 793 allows it): the relay passes the FIN on.
    // While credentials are being checked, the request may already be buffered: decide after the check.
    else if (this.phase === 'command' || this.phase === 'verifying') this.clientEnded = true;
    else if (this.phase === 'associated') this.close('ok');
    else this.close(`client closed during ${this.phase}`);
  }

  private socketClosed(): void {
    if (this.phase === 'closing') this.close();
    else if (this.phase === 'associated') this.close('ok');
    else this.close('client closed');
  }

  /** Runs the handshake as far as the bytes so far allow (src/server/handshake.ts decides). */
  private advance(): void {
    for (;;) {
      const step = this.handshake.next(this.ctx.live.users !== null);
      switch (step.kind) {
        case 'more':
          return;
        case 'method':
          if (this.ctx.log.isLevelEnabled('debug')) this.debug({ offered: step.offered.map(describeMethod), selected: describeMethod(step.method) }, 'greeting');
          this.send(step.reply);
          if (step.method === Method.NO_ACCEPTABLE) {
            const wanted = this.ctx.live.users ? 'username/password' : 'no authentication';
            return this.closeGently(`no acceptable method: client offered [${step.offered.join(',')}], server needs ${wanted}`);
          }
          this.phase = step.method === Method.USERNAME_PASSWORD ? 'auth' : 'request';
          continue;
        case 'login':
          this.phase = 'verifying';
          return this.verify(step.username, step.password);
        case 'request':
          this.phase = 'command';
          this.ctx.handshakes.remove(this);
          return this.dispatch(step.request);
        case 'error':
          if (step.reply === null) return this.close(step.message);
          return this.fail(step.reply, step.message);
      }
    }
  }

  private verify(username: string, password: Buffer): void {
    const users = this.ctx.live.users;
    if (!users) return this.close('credentials without users');
    const login = this.ctx.gate.loginBegins(this.client.host);
    if (login.wait < 0) {
      this.ctx.stats.authBlocked++;
      return this.close('blocked after repeated failed logins');
    }
    if (login.blocksNow) this.log.warn({ user: username }, 'address blocked after repeated failed logins');
    // An address that keeps failing waits before each new check: guessing gets slow.
    if (login.wait > 0) {
      this.pauseClient();
      this.ctx.handshakes.remove(this);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.ctx.handshakes.add(this, performance.now());
        this.check(users, username, password);
      }, login.wait);
      return;
    }
    this.check(users, username, password);
  }

  private check(users: UserStore, username: string, password: Buffer): void {
    users.verify(username, password).then(
      (right) => {
        if (this.closed) return;
        const ok = this.ctx.gate.loginChecked(this.client.host, right);
        this.debug({ user: username, ok }, 'username/password');
        this.send(this.handshake.loginChecked(ok));
        this.user = username;
        if (!ok) {
          this.ctx.stats.authFailures++;
          return this.closeGently(right ? 'blocked after repeated failed logins' : 'authentication failed');
        }
        this.phase = 'request';
        this.resumeClient();
        this.advance();
        if (this.clientEnded && this.phase === 'request') this.close('client closed during request');
      },
      (error: Error) => this.close(`password check failed: ${error.message}`),
    );
  }

  /** The session caps per client address and per user (the gate counts), and the shared rate buckets. */
  private admitSession(): boolean {
    const admitted = this.ctx.gate.enter(this.client.host, this.user);
    if (typeof admitted === 'string') {
      this.overLimit(admitted);
      return false;
    }
    this.counted = true;
    this.rates = admitted;
    return true;
  }

  private overLimit(limit: OverLimit): void {
    this.ctx.stats.sessionsOverLimit++;
    this.log.info({ command: this.command, limit }, 'session limit reached');
    this.fail(this.ctx.live.overLimitReply, `too many sessions from this ${limit}`);
  }

  private dispatch(request: Request): void {
    this.command = describeCommand(request.command);
    this.target = formatAddress(request.destination);
    this.debug({ command: this.command, target: this.target }, 'request');
    if (!this.admitSession()) return;
    const shared = this.ctx.gate.claim(this.client.host, this.user);
    if (shared === null) return this.run(request);
    // The fleet's store answers once per session, before the command runs; data never waits for it.
    this.shared = shared;
    // Mostly answered at once, on slots this process holds already.
    const claiming = shared.begin();
    if (claiming === null) return this.run(request);
    claiming.then(
      (over) => {
        if (this.closed) return;
        if (over === null) return this.run(request);
        this.shared = null;
        this.overLimit(overLimit(over));
      },
      (error: Error) => this.close(`internal error: ${error.message}`),
    );
  }

  private run(request: Request): void {
    let work: Promise<void>;
    switch (request.command) {
      case Command.CONNECT:
        work = runConnect(this, request.destination);
        break;
      case Command.BIND:
        work = this.ctx.runBind(this, request.destination);
        break;
      case Command.UDP_ASSOCIATE:
        work = runAssociate(this, request.destination);
        break;
      case Command.FWD_UDP:
        work = runUdpOverTcp(this);
        break;
    }
    work.catch((error: Error) => {
      this.log.error({ err: error }, 'command failed unexpectedly');
      if (this.phase === 'command') this.fail(Reply.GENERAL_FAILURE, `internal error: ${error.message}`);
      else this.close(`internal error: ${error.message}`);
    });
  }
}

function runRelease(release: (() => void) | Closable): void {
  if (typeof release === 'function') release();
  else release.close();
}
