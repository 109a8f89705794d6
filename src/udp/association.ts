import type { Logger } from 'pino';
import { addressFromHost, type SocksAddress } from 'socksgate-client/protocol';
import { MAX_UDP_PAYLOAD } from 'socksgate-client/protocol';
import { parseUdpHeader, udpHeaderSize, writeUdpHeader } from 'socksgate-client/protocol';
import { FragmentQueue, type ReassemblyBudget } from './fragments.js';
import { openRelay, type RelayOptions, type RelayReceiver, type RelaySocket } from './relay-socket.js';
import { addressForSocket, unmapAddress } from './socket.js';
import type { DropReason, UdpStats } from './stats.js';
import type { DestinationMemo, Gate, MemoOwner } from '../policy/gate.js';
import type { Policy } from '../policy/policy.js';
import type { QuotaAccount, QuotaWatcher } from '../policy/quota.js';
import { DOWN, UP } from '../policy/quota-ledger.js';

/** How datagrams reach the client: the association's own socket, or a shared fixed-port socket. */
export interface ClientChannel {
  /** Sends header + payload to the client at `port` (its IP is the channel's business); null when sent, else the OS's refusal code. */
  send(header: Buffer, payload: Buffer, port: number): string | null;
  /** send() may keep `payload` past the call (a dgram send the OS queued): a transient view is copied first. */
  readonly keepsPayload: boolean;
  /** The association is done with the channel. */
  release(): void;
}

/** What every association of a server shares: one object per server. */
export interface AssociationSettings {
  readonly endpointIndependent: boolean;
  readonly reassemble: boolean;
  readonly fragmentTimeoutMs: number;
  readonly reassemblyLimit: number;
  readonly budget: ReassemblyBudget;
  readonly maxPayload: number;
  readonly idleTimeoutMs: number;
  /** Every decision: destinations (with DNS), the destination cap, amplification. */
  readonly gate: Gate;
  readonly stats: UdpStats;
  /** Buffer sizes of the relay sockets, and where their kernel drops are counted. */
  readonly relay: RelayOptions;
}

/** Who owns the association (its session): the logger, and what an idle timeout ends. */
export interface AssociationOwner {
  /** The session's logger, made on first use. */
  readonly log: Logger;
  /** The association ended by itself (idle timeout); not called when close() is. */
  timedOut(kind: 'udp-idle'): void;
  /** Ends the session (the user's quota ran out, quotas.onExhausted: end). */
  close?(result?: string): void;
}

/** What is this association's own; kept in its fields (no options object per association). */
export interface AssociationOptions {
  /** The control connection's peer, as its socket reports it. */
  readonly clientAddress: string;
  /** Fixed-port mode: the client is reached through a shared channel given to attach(). */
  readonly shared: boolean;
  /** The client's UDP port when the request declared it, else null (the first datagram fixes it). */
  readonly declaredPort: number | null;
  /** Who is asking, for policy. */
  readonly user: string | null;
  /** Takes a datagram of `bytes` from the client's and user's rate buckets; null when unlimited. */
  readonly meter: ((bytes: number) => boolean) | null;
  /**
   * Where datagrams go instead of this proxy's own UDP socket (an upstream hop, such as the UDP over
   * TCP of `socksgate tunnel`). It gets the destination as the client wrote it (names unresolved,
   * no local policy: the upstream decides) and answers through `fromUpstream`.
   */
  readonly egress?: (destination: SocksAddress, payload: Buffer) => void;
  readonly owner: AssociationOwner;
}

// Largest UDP payload over IPv4 (65535 - 20 - 8); a wrapped reply must fit in it.
// Senders remembered for their reply headers under endpoint-independent filtering (oldest forgotten first).
const MAX_STRANGERS = 1024;

/**
 * One UDP ASSOCIATE (RFC 1928 §7). Owns its relay socket, fragment queue and idle timer; close()
 * releases all of them. Datagrams from the client are unwrapped and sent on from the relay socket;
 * datagrams from destinations are wrapped with their real source and sent to the client.
 */
export class Association implements RelayReceiver, ClientChannel, MemoOwner, QuotaWatcher {
  /** Payload bytes client → destinations, and destinations → client. */
  up = 0;
  down = 0;
  /** Datagrams relayed client → destinations and destinations → client. */
  datagramsUp = 0;
  datagramsDown = 0;
  /** The client's UDP port, once declared or learned. */
  clientPort: number | null;

  private relay!: RelaySocket;
  private channel: ClientChannel | null = null;
  private clientIp: string;
  private clientOnRelay = '';
  /** Destinations the client sent to ("ip|port"), with the reply header for each. */
  private firstPeer: string | null = null;
  private firstPeerHeader: Buffer | null = null;
  // The second destination on (most associations only ever have one).
  private morePeers: Map<string, Buffer> | null = null;
  /** Endpoint-independent filtering: headers for senders the client never sent to. */
  private strangers: Map<string, Buffer> | null = null;
  /** The gate's decisions for this association's destinations (made with the first that needs one). */
  private memo: DestinationMemo | null = null;
  private fragments: FragmentQueue | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastActivity = Date.now();
  private closed = false;
  /**
   * The hot path's memo: the header bytes (RSV FRAG ATYP ADDR PORT, FRAG 0) of the last destination
   * that was allowed and sent to, with where that goes. A client that keeps sending to one
   * destination then costs no parsing, no strings and no lookups per datagram. Valid while
   * `lastPolicy` is the policy in force.
   */
  private lastHeader: Buffer | null = null;
  /** Set by forward() for the datagram being handled: the socket-form address it went to. */
  private sentTo: string | null = null;
  private lastTarget = '';
  private lastPort = 0;
  private lastPolicy: Policy | null = null;
  /** The same for replies: the last sender and its reply header. */
  private lastFromAddress = '';
  private lastFromPort = -1;
  private lastFromHeader: Buffer | null = null;

  private readonly shared: boolean;
  private readonly user: string | null;
  private readonly rateMeter: ((bytes: number) => boolean) | null;
  private readonly egress: ((destination: SocksAddress, payload: Buffer) => void) | undefined;
  private readonly owner: AssociationOwner;
  /** The user's traffic quota, when one applies: every datagram spends from it. */
  private readonly quota: QuotaAccount | null;

  constructor(
    private readonly settings: AssociationSettings,
    options: AssociationOptions,
  ) {
    this.clientIp = unmapAddress(options.clientAddress);
    this.clientPort = options.declaredPort;
    this.shared = options.shared;
    this.user = options.user;
    this.rateMeter = options.meter;
    this.egress = options.egress;
    this.owner = options.owner;
    this.quota = settings.gate.quotaOf(options.user);
    this.quota?.watch(this);
  }

  /** The user's quota ran out (quotas.onExhausted: end): the session ends, and this association with it. */
  quotaRunOut(): void {
    if (this.owner.close) this.owner.close('quota exhausted');
    else this.close();
  }

  /** The client's IP without IPv4 mapping. */
  get client(): string {
    return this.clientIp;
  }

  get relayPort(): number {
    return this.relay.port;
  }

  /**
   * Binds the relay socket. Unless `shared`, it also faces the client (one socket per association).
   * Returns false when the association was closed meanwhile (nothing is left open then).
   */
  async open(): Promise<boolean> {
    const relay = await openRelay(this.settings.relay);
    if (this.closed) {
      this.settings.relay.kernelDrops?.untrack(relay.port);
      relay.close();
      return false;
    }
    this.relay = relay;
    this.settings.stats.associationsOpened++;
    this.clientOnRelay = addressForSocket(this.clientIp, relay.dualStack) ?? this.clientIp;
    // Per-association mode: the relay socket is also the way to the client.
    if (!this.shared) this.channel = this;
    relay.receive(this);
    if (this.settings.idleTimeoutMs > 0) this.armIdle(this.settings.idleTimeoutMs);
    return true;
  }

  /** Fixed-port mode: the shared channel to the client, once the demultiplexer has registered us. */
  attach(channel: ClientChannel): void {
    if (this.closed) channel.release();
    else this.channel = channel;
  }

  /** The fixed-port demultiplexer learned the client's port from its first datagram. */
  learnPort(port: number): void {
    this.clientPort = port;
  }

  /** For a status page: the client endpoint, destinations (the first 20) and traffic each way. */
  describe(): Record<string, unknown> {
    const destinations: string[] = [];
    for (const key of this.peerKeys()) {
      if (destinations.length >= 20) break;
      const [ip, port] = key.split('|');
      destinations.push(`${unmapAddress(ip!)}:${port}`);
    }
    return {
      udpClient: this.clientPort === null ? `${this.clientIp}:?` : `${this.clientIp}:${this.clientPort}`,
      relayPort: this.relay?.port,
      destinations,
      destinationCount: this.peerCount(),
      datagramsUp: this.datagramsUp,
      datagramsDown: this.datagramsDown,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.quota?.unwatch(this);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.fragments?.close();
    this.firstPeer = this.firstPeerHeader = this.morePeers = null;
    this.strangers = null;
    this.memo?.close();
    this.channel?.release();
    if (this.relay) {
      this.settings.relay.kernelDrops?.untrack(this.relay.port);
      this.relay.close();
      this.settings.stats.associationsClosed++;
    }
  }

  /** A datagram from the client (RFC 1928 §7 header, then DATA). */
  fromClient(datagram: Buffer): void {
    const stats = this.settings.stats;
    stats.clientDatagrams++;
    if (this.closed) return this.drop('source', 1);
    this.lastActivity = Date.now();
    if (datagram.length < 4 || datagram[0] !== 0 || datagram[1] !== 0) return this.drop('malformed', 1);
    const last = this.lastHeader;
    if (last !== null && datagram.length >= last.length && datagram.compare(last, 0, last.length, 0, last.length) === 0 && this.lastPolicy === this.settings.gate.policy) {
      return this.forwardToLast(datagram, last.length);
    }
    const header = parseUdpHeader(datagram);
    if (header.status !== 'ok') return this.drop('malformed', 1);
    this.sentTo = null;
    this.relayFromClient(header.value.address, header.value.fragment, datagram.subarray(header.size));
    // Remembered only once a literal destination was allowed and sent to (never names: their answers change).
    if (header.value.fragment === 0 && header.value.address.type !== 'domain' && this.sentTo !== null && this.egress === undefined) {
      this.lastHeader = Buffer.from(datagram.subarray(0, header.size));
      this.lastTarget = this.sentTo;
      this.lastPort = header.value.address.port;
      this.lastPolicy = this.memo!.policy;
      this.sentTo = null;
    }
  }

  /**
   * The memo's destination again: the checks that depend on this datagram, then the send of its
   * payload (from byte `offset`, after the header: no view of it is made).
   */
  private forwardToLast(datagram: Buffer, offset: number): void {
    const stats = this.settings.stats;
    const length = datagram.length - offset;
    stats.clientBytes += length;
    if (this.rateMeter !== null && !this.rateMeter(length)) return this.drop('rate-limited', 1);
    if (this.quota !== null && !this.quota.takeAll(UP, length)) return this.drop('quota', 1);
    if (length > this.settings.maxPayload) return this.drop('too-large', 1);
    this.sendOn(this.lastTarget, this.lastPort, datagram, offset);
  }

  /**
   * Sends payload[offset..] from the relay socket and counts it; false when the OS refused at once
   * (counted as a drop).
   */
  private sendOn(target: string, port: number, payload: Buffer, offset = 0): boolean {
    const refused = this.relay.send(null, payload, port, target, offset);
    if (refused !== null) {
      this.drop('send-error', 1, refused);
      return false;
    }
    const length = payload.length - offset;
    const stats = this.settings.stats;
    stats.forwardedDatagrams++;
    stats.forwardedBytes += length;
    this.up += length;
    this.datagramsUp++;
    return true;
  }

  /** A datagram from a UDP-over-TCP frame: already unwrapped, never fragmented. */
  fromFrame(address: SocksAddress, payload: Buffer): void {
    this.settings.stats.clientDatagrams++;
    if (this.closed) return this.drop('source', 1);
    this.lastActivity = Date.now();
    this.relayFromClient(address, 0, payload);
  }

  private relayFromClient(destination: SocksAddress, fragment: number, data: Buffer): void {
    const stats = this.settings.stats;
    let address = destination;
    let payload = data;
    stats.clientBytes += payload.length;
    if (this.rateMeter !== null && !this.rateMeter(payload.length)) return this.drop('rate-limited', 1);
    if (this.quota !== null && !this.quota.takeAll(UP, payload.length)) return this.drop('quota', 1);
    if (fragment !== 0) {
      stats.fragments++;
      if (!this.settings.reassemble) return this.drop('fragment-disabled', 1);
      this.fragments ??= new FragmentQueue(this.settings.fragmentTimeoutMs, this.settings.reassemblyLimit, this.settings.budget, (reason, count) =>
        this.drop(reason, count),
      );
      const whole = this.fragments.add(fragment, address, Buffer.from(payload));
      if (!whole) return;
      stats.reassembled++;
      address = whole.address;
      payload = whole.payload;
    }
    if (payload.length > this.settings.maxPayload) return this.drop('too-large', 1);
    if (address.port === 0) return this.drop('malformed', 1, 'destination port 0');
    if (this.egress) {
      // The egress may hold on to the payload (a TCP write), which a transient relay's view cannot outlive.
      this.egress(address, this.relay?.transient ? Buffer.from(payload) : payload);
      stats.forwardedDatagrams++;
      stats.forwardedBytes += payload.length;
      this.up += payload.length;
      this.datagramsUp++;
      return;
    }
    if (address.type === 'domain') this.forwardToName(address, payload);
    else if (this.allowed(address.host, address.host, address.port)) this.forward(address.host, address.port, payload);
  }

  /**
   * Whether the gate lets this association send to `ip` (the address `host` names) and `port`;
   * decided once per destination while the same rules are in force. A denial is dropped and counted
   * (and logged once, by the memo's hook).
   */
  private allowed(host: string, ip: string, port: number): boolean {
    const allowed = this.destinations().allows(host, ip, port) ?? false;
    if (!allowed) this.drop('denied', 1, host);
    return allowed;
  }

  private destinations(): DestinationMemo {
    return (this.memo ??= this.settings.gate.memo(this.clientIp, this.user, this));
  }

  /** The memo's report of a destination the rules deny (once each). */
  policyDenied(host: string, port: number, ip: string | undefined, reason: string): void {
    this.owner.log.info({ command: 'udp', target: `${host}:${port}`, address: ip, rule: reason }, 'denied by policy');
  }

  private forwardToName(address: SocksAddress, payload: Buffer): void {
    let data = payload;
    const now = this.destinations().decideName(
      address.host,
      address.port,
      true,
      (allowed, ip) => {
        if (!allowed || ip === undefined) return this.drop('denied', 1, address.host);
        try {
          this.forward(ip, address.port, data);
        } catch (error) {
          // Nothing a name resolves to may take the relay down.
          this.drop('dns', 1, (error as Error).message);
        }
      },
      (reason) => this.drop('dns', 1, reason === 'busy' ? 'too many lookups waiting' : address.host),
    );
    // Kept past this call while the name resolves (the callback reads `data` then).
    if (!now) data = Buffer.from(payload);
  }

  private forward(ip: string, port: number, payload: Buffer): void {
    const target = addressForSocket(ip, this.relay.dualStack);
    if (target === null) return this.drop('unreachable', 1, ip);
    const key = `${target}|${port}`;
    if (this.peerHeader(key) === undefined) {
      if (this.peerCount() >= this.settings.gate.limits.destinationsPerAssociation) return this.drop('too-many-destinations', 1, ip);
      const header = replyHeader(ip, port);
      if (this.firstPeer === null) {
        this.firstPeer = key;
        this.firstPeerHeader = header;
      } else (this.morePeers ??= new Map()).set(key, header);
    }
    if (this.sendOn(target, port, payload)) this.sentTo = target;
  }

  /** A datagram an egress brought back from `source`: wrapped and sent to the client. */
  fromUpstream(source: SocksAddress, payload: Buffer): void {
    if (this.closed || this.channel === null || this.clientPort === null) return this.drop('filtered', 1);
    const stats = this.settings.stats;
    stats.replyDatagrams++;
    stats.replyBytes += payload.length;
    const header = this.strangerHeader(`${source.host}|${source.port}`, source.host, source.port);
    if (header.length + payload.length > MAX_UDP_PAYLOAD) return this.drop('too-large', 1);
    if (this.quota !== null && !this.quota.takeAll(DOWN, payload.length)) return this.drop('quota', 1);
    const refused = this.channel.send(header, payload, this.clientPort);
    if (refused !== null) return this.drop('send-error', 1, refused);
    stats.deliveredDatagrams++;
    stats.deliveredBytes += payload.length;
    this.down += payload.length;
    this.datagramsDown++;
  }

  /**
   * A datagram on the relay socket. Per-association mode: it hears both the client and the
   * destinations. Fixed-port mode: destinations only (the client uses the shared socket).
   */
  onDatagram(datagram: Buffer, address: string, port: number): void {
    if (!this.shared && address === this.clientOnRelay) {
      if (this.clientPort === null) this.clientPort = port;
      if (port === this.clientPort) return this.fromClient(datagram);
      // Another port of the client's host: a destination only if the client sent to it.
      // (The memo of the last destination heard from spares a key string per reply from it.)
      if (!this.settings.endpointIndependent && !(port === this.lastFromPort && address === this.lastFromAddress) && this.peerHeader(`${address}|${port}`) === undefined) {
        this.settings.stats.clientDatagrams++;
        return this.drop('source', 1);
      }
    }
    this.fromTarget(datagram, address, port);
  }

  /** Sends the relay socket accepted and the OS refused later. */
  onSendError(code: string, count: number): void {
    this.drop('send-error', count, code);
  }

  /** Per-association mode's channel to the client: the relay socket itself (it copies what it queues). */
  get keepsPayload(): boolean {
    return false;
  }

  /** The reply header of a destination the client sent to ("ip|port" in socket form), if it did. */
  private peerHeader(key: string): Buffer | undefined {
    if (key === this.firstPeer) return this.firstPeerHeader!;
    return this.morePeers?.get(key);
  }

  private peerCount(): number {
    return (this.firstPeer === null ? 0 : 1) + (this.morePeers?.size ?? 0);
  }

  private *peerKeys(): Iterable<string> {
    if (this.firstPeer !== null) yield this.firstPeer;
    if (this.morePeers) yield* this.morePeers.keys();
  }

  /** The reply header for a sender the client never sent to (remembered, the oldest forgotten first). */
  private strangerHeader(key: string, ip: string, port: number): Buffer {
    this.strangers ??= new Map();
    let header = this.strangers.get(key);
    if (header === undefined) {
      if (this.strangers.size >= MAX_STRANGERS) this.strangers.delete(this.strangers.keys().next().value as string);
      header = replyHeader(ip, port);
      this.strangers.set(key, header);
    }
    return header;
  }

  send(header: Buffer, payload: Buffer, port: number): string | null {
    return this.relay.send(header, payload, port, this.clientOnRelay);
  }

  release(): void {}

  /** A datagram from a destination (or anyone, with endpoint-independent filtering). */
  private fromTarget(datagram: Buffer, address: string, port: number): void {
    const stats = this.settings.stats;
    stats.replyDatagrams++;
    stats.replyBytes += datagram.length;
    this.lastActivity = Date.now();
    let header: Buffer | undefined;
    if (port === this.lastFromPort && address === this.lastFromAddress) header = this.lastFromHeader!;
    else {
      const key = `${address}|${port}`;
      header = this.peerHeader(key);
      if (header !== undefined) {
        // Peers are never forgotten while the association lives, so the memo stays true.
        this.lastFromAddress = address;
        this.lastFromPort = port;
        this.lastFromHeader = header;
      } else {
        if (!this.settings.endpointIndependent) return this.drop('filtered', 1);
        header = this.strangerHeader(key, unmapAddress(address), port);
      }
    }
    if (this.clientPort === null) return this.drop('filtered', 1);
    // Anti-amplification: what comes back stays within a ratio of what the client sent.
    if (this.settings.gate.amplifies(this.up, this.down, datagram.length)) return this.drop('amplification', 1);
    if (datagram.length > this.settings.maxPayload || header.length + datagram.length > MAX_UDP_PAYLOAD) return this.drop('too-large', 1);
    if (this.channel === null) return this.drop('filtered', 1);
    if (this.quota !== null && !this.quota.takeAll(DOWN, datagram.length)) return this.drop('quota', 1);
    const bytes = this.relay.transient && this.channel.keepsPayload ? Buffer.from(datagram) : datagram;
    const refused = this.channel.send(header, bytes, this.clientPort);
    if (refused !== null) return this.drop('send-error', 1, refused);
    stats.deliveredDatagrams++;
    stats.deliveredBytes += datagram.length;
    this.down += datagram.length;
    this.datagramsDown++;
  }

  /** Counts (and at debug level logs) datagrams that were not relayed. */
  drop(reason: DropReason, count: number, detail?: string): void {
    this.settings.stats.drops[reason] += count;
    const log = this.owner.log;
    if (log.isLevelEnabled('debug')) log.debug({ reason, count, detail }, 'udp datagram dropped');
  }

  private armIdle(delay: number): void {
    this.idleTimer = setTimeout(() => {
      const quiet = Date.now() - this.lastActivity;
      if (quiet >= this.settings.idleTimeoutMs) {
        this.close();
        this.owner.timedOut('udp-idle');
      } else this.armIdle(this.settings.idleTimeoutMs - quiet);
    }, delay);
  }
}

/** The RFC 1928 §7 header for replies from ip:port, built once per sender and reused. */
function replyHeader(ip: string, port: number): Buffer {
  const source = addressFromHost(ip, port);
  const header = Buffer.allocUnsafe(udpHeaderSize(source));
  writeUdpHeader(header, 0, source);
  return header;
}
