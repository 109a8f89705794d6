import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Dialer } from './dialer.js';
import type { UserStore } from './users.js';
import type { Gate } from '../policy/gate.js';
import type { RateBuckets } from '../policy/limits.js';
import type { NativeConn } from '../native/tcp.js';
import type { SocksAddress } from 'socksgate-client/protocol';
import type { ReplyCode } from 'socksgate-client/protocol';
import type { Resolver } from '../dns/resolver.js';
import type { FixedPortDemux } from '../udp/demux.js';
import type { ReassemblyBudget } from '../udp/fragments.js';
import type { UdpStats } from '../udp/stats.js';
import type { RelayOptions } from '../udp/relay-socket.js';
import type { HandshakeDeadlines } from './handshake-deadlines.js';

// What the server's parts share: the server-wide context every session reads, and the narrow view of
// a session that a command gets (session.ts implements it; command files never import the session).

/** What a reload replaces at once besides the gate's rules; sessions read it at each step. */
export interface LiveSettings {
  readonly users: UserStore | null;
  /** The reply to a request over a session limit. */
  readonly overLimitReply: ReplyCode;
}

/** Counters of the TCP side, read by exporters. */
export class ServerStats {
  /** TCP connections accepted (refused ones included). */
  connectionsAccepted = 0;
  /** Sessions ended, by command ('-' for those that never got to one). */
  readonly sessionsEnded: Record<string, number> = {};
  /** Sessions ended by a timeout, by kind. */
  readonly timeouts = { handshake: 0, idle: 0, bind: 0, 'udp-idle': 0 };
  authFailures = 0;
  /** Connections closed at once because their address was blocked after failed logins. */
  authBlocked = 0;
  /** Requests refused over a per-client or per-user session limit. */
  sessionsOverLimit = 0;
  /** Requests refused by a rule or safe default. */
  denied = 0;
}

/** Something a session owns that has its own close() (an association, an egress): closed with the session. */
export interface Closable {
  close(): void;
}

/** What a relaying command reports: bytes client→target (up) and target→client (down), read when asked. */
export interface Metered {
  readonly up: number;
  readonly down: number;
}

/** What a status page shows about a command beyond the common fields. */
export interface Describable {
  describe(): Record<string, unknown>;
}

/** Carries out one command for a session, from its request to the session's end. */
export type CommandRunner = (session: CommandContext, destination: SocksAddress) => Promise<void>;

/** What every session of one server shares. */
export interface SessionContext {
  live: LiveSettings;
  /** Every decision: rules, limits, lockout, destinations (src/policy/gate.ts). */
  readonly gate: Gate;
  readonly stats: ServerStats;
  readonly dialer: Dialer;
  readonly resolver: Resolver;
  readonly log: Logger;
  /** The sessions' handshake deadlines (the server's handshake timeout each), on one timer. */
  readonly handshakes: HandshakeDeadlines;
  /** The time a CONNECT has to reach its destination (the native helper's connects use it). */
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly bindTimeoutMs: number;
  /** Runs BIND: a local listener (bind.ts), or another way to get one (gateway mode: the upstream's BIND). */
  readonly runBind: CommandRunner;
  readonly udp: UdpContext;
}

/**
 * What a command (connect.ts, bind.ts, associate.ts, udp-over-tcp.ts, gateway/) may use of its session:
 * its request's facts, replies, the client connection, and the resources it hands over to be closed
 * with the session.
 */
export interface CommandContext {
  readonly ctx: SessionContext;
  readonly client: SocksAddress;
  readonly user: string | null;
  /** The command as logged ('connect'), and the target (a BIND sets the peer it accepted). */
  readonly command: string;
  target: string;
  /** The rate buckets of the client address and user (none when unlimited). */
  readonly rates: readonly RateBuckets[];
  readonly isClosed: boolean;
  /** Aborted when the session closes (made on first use: it costs an AbortController). */
  readonly signal: AbortSignal;
  /** The server's logger with this client's address on every line. */
  readonly log: Logger;
  /** The client as a net.Socket (a connection the native helper holds becomes one here). */
  readonly socket: Socket;
  /** The client connection's peer address as its socket reports it (IPv4-mapped on a dual-stack listener). */
  readonly peerAddress: string;
  /** The client connection's own address (the one the client reached). */
  localAddress(): string;
  /** TCP keepalive on the client connection after `ms` of quiet. */
  setKeepAlive(ms: number): void;
  /** The client connection while the native helper holds it, for a command that can go on through it. */
  readonly nativeClient: NativeConn | null;
  /** Byte counts for status pages and the session's log line. */
  meter: (() => readonly [number, number]) | Metered | null;
  details: (() => Record<string, unknown>) | Describable | null;
  /** `release` runs (or its close() is called) once, when the session closes. */
  own(release: (() => void) | Closable): void;
  /** Sends a reply (RFC 1928 §6); `onSent` once it is written. */
  reply(code: ReplyCode, bound?: SocksAddress, onSent?: () => void): void;
  /** A reply's bytes for a native tunnel to write as it starts (null once closed). */
  replyBytes(code: ReplyCode, bound?: SocksAddress): Buffer | null;
  /** Sends a failure reply, then closes once the client has had a moment to read it. */
  fail(code: ReplyCode, result: string): void;
  close(result?: string): void;
  timedOut(kind: keyof ServerStats['timeouts']): void;
  /** Hands the client over to a relay: the bytes it sent ahead and whether it half-closed. */
  detach(): { early: Buffer; ended: boolean };
  /** UDP ASSOCIATE: the control connection only keeps the association alive from here. */
  holdControl(): void;
  handOverControl(): void;
}

/** What UDP ASSOCIATE needs from the server. */
export interface UdpContext {
  readonly stats: UdpStats;
  readonly budget: ReassemblyBudget;
  /** Set in fixed-port mode. */
  readonly demux: FixedPortDemux | null;
  readonly advertise: string | null;
  readonly endpointIndependent: boolean;
  readonly reassemble: boolean;
  readonly fragmentTimeoutMs: number;
  readonly reassemblyLimit: number;
  readonly maxPayload: number;
  readonly idleTimeoutMs: number;
  readonly keepaliveMs: number;
  readonly egress: EgressFactory | null;
  /** Buffer sizes of per-association relay sockets, and their kernel drop counting. */
  readonly relay: RelayOptions;
}

/** An upstream path for one association's datagrams; the session owns it (close() when it ends). */
export interface Egress {
  send(destination: SocksAddress, payload: Buffer): void;
  close(): void;
}

/**
 * Makes the egress of one association; `deliver` takes what comes back (source, payload). `session`
 * is the one the association belongs to (who the client is; close() ends it). A factory that cannot
 * serve this session throws a SocksError: its reply code goes to the client.
 */
export type EgressFactory = (deliver: (source: SocksAddress, payload: Buffer) => void, log: CommandContext['log'], session: CommandContext) => Egress;

