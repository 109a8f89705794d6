import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Association, ClientChannel } from './association.js';
import { openClientSocket, openSharedSocket, type RelayReceiver, type RelaySocket } from './relay-socket.js';
import { addressForSocket, unmapAddress } from './socket.js';
import type { UdpStats } from './stats.js';
import { inodeOfPort, type KernelDrops } from './kernel-drops.js';

/**
 * How a fixed-port demultiplexer shares its port with sibling worker processes. A datagram reaches
 * whichever worker the kernel gives it to (each worker's own socket of the port on the native
 * helper, one socket all workers read on dgram); the steer knows which endpoints the siblings own
 * and passes their datagrams on. See src/cluster/steering.ts.
 */
export interface DemuxSteer {
  /** Announces that this worker owns `ip` (and `port`, or any port while waiting for it); resolves once every sibling knows. */
  claim(ip: string, port: number | null): Promise<void>;
  /** The endpoint is no longer this worker's. */
  release(ip: string, port: number | null): void;
  /** A sibling that owns `ip|port`, or is the only one waiting for `ip` (-1: none, -2: several). */
  ownerOf(ip: string, port: number): number;
  /** Passes the datagram to sibling `worker`, tagged with its real sender. */
  forward(worker: number, datagram: Buffer, ip: string, port: number): void;
}

/**
 * The datagrams of a socket connected to one association's client: straight to the association, with
 * no lookup by sender. Anything from another sender (which a connected socket should never get) goes
 * through the demultiplexer like a datagram of a shared socket.
 */
class ClientPort implements RelayReceiver {
  constructor(
    private readonly demux: FixedPortDemux,
    private readonly association: Association,
    private readonly address: string,
    private readonly port: number,
  ) {}

  onDatagram(datagram: Buffer, address: string, port: number): void {
    if (port === this.port && address === this.address) this.association.fromClient(datagram);
    else this.demux.onDatagram(datagram, address, port);
  }

  onSendError(code: string, count: number): void {
    this.demux.onSendError(code, count);
  }

  onSocketFailed(reason: string): void {
    this.demux.onSocketFailed(reason);
  }
}

/**
 * Fixed-port mode: one UDP socket per listen address, shared by every association, each datagram
 * routed to its association by the sender's address alone. A sender maps to an association when
 * its IP and port were declared in the request or fixed by an earlier datagram; otherwise to the one
 * association from that IP still waiting for its first datagram. With two or more waiting, the
 * datagram is dropped as ambiguous — never guessed, since a wrong guess hands one client's
 * association to another.
 */
export class FixedPortDemux implements RelayReceiver {
  private readonly sockets = new Map<string, RelaySocket>();
  // Associations by client IP, then port: a datagram's lookup makes no key string.
  private readonly byEndpoint = new Map<string, Map<number, Association>>();
  private endpoints = 0;
  private readonly waiting = new Map<string, Set<Association>>();
  // The last sender heard and its association: a steady client costs no key string or map lookup. The
  // address is compared as the socket reported it (the helper hands out one string per steady sender).
  private memoAddress = '';
  private memoPort = -1;
  private memoOwner: Association | null = null;
  // The last sender address as a socket reported it, and its IP unmapped.
  private rawAddress = '';
  private rawIp = '';

  constructor(
    private readonly stats: UdpStats,
    private readonly log: Logger,
    /** Set in a worker process: the port is shared with sibling workers. */
    private readonly steer: DemuxSteer | null = null,
    /** Where the shared sockets' kernel receive-queue drops are counted. */
    private readonly kernelDrops: KernelDrops | null = null,
  ) {}

  // The inodes of the sockets whose kernel drops are counted.
  private readonly inodes = new Map<RelaySocket, number>();
  // The listen host of each shared socket, and the shared socket each association was registered on.
  private readonly hostOf = new Map<RelaySocket, string>();
  private readonly sharedOf = new Map<Association, RelaySocket>();
  // With workers: an association's socket connected to its client (null: tried, none made). See attract().
  private readonly attracted = new Map<Association, RelaySocket | null>();
  private connectedSockets = 0;
  // Connected sockets are an extra descriptor per association: at most an eighth of the descriptor limit
  // goes to them, so that relay sockets and connections of new clients never run out for their sake.
  private readonly connectedLimit = Math.floor(descriptorLimit() / 8);

  // Settles once every bind() so far has: an ASSOCIATE accepted while its listener's socket is still being
  // bound (a worker starting up) waits for it instead of failing.
  private binding: Promise<unknown> = Promise.resolve();

  /** Binds the shared socket for one listen host (idempotent per host). */
  bind(host: string, port: number): Promise<number> {
    const bound = this.bindNow(host, port);
    this.binding = Promise.allSettled([this.binding, bound]);
    return bound;
  }

  /** Resolves once the sockets being bound are (register() then finds them). */
  whenBound(): Promise<unknown> {
    return this.binding;
  }

  private async bindNow(host: string, port: number): Promise<number> {
    const existing = this.sockets.get(host);
    if (existing) return existing.port;
    const socket = await openSharedSocket(host, port, this.steer !== null);
    socket.receive(this);
    this.sockets.set(host, socket);
    this.hostOf.set(socket, host);
    // A dgram socket that the primary bound for every worker is one socket read by all: each worker
    // would count its drops, so it is left uncounted. Each worker's own socket (the helper's) is counted.
    if (this.kernelDrops && (socket.transient || this.steer === null)) {
      const inode = socket.inode ?? inodeOfPort(socket.port);
      this.inodes.set(socket, inode);
      this.kernelDrops.trackInode(inode);
    }
    return socket.port;
  }

  /**
   * Registers an association whose client reached the proxy on `localHost`. Returns the channel
   * to its client, or a reason when the declared endpoint already belongs to another association.
   */
  register(association: Association, localHost: string): { channel: ClientChannel; port: number; claimed: Promise<void> } | string {
    const bound = this.socketFor(localHost);
    if (!bound) return `no fixed-port UDP socket for ${localHost}`;
    const ip = association.client;
    if (association.clientPort !== null) {
      if (this.ownerAt(ip, association.clientPort)) return `UDP endpoint ${ip}:${association.clientPort} already belongs to another association`;
      this.setOwner(ip, association.clientPort, association);
    } else {
      let set = this.waiting.get(ip);
      if (!set) this.waiting.set(ip, (set = new Set()));
      set.add(association);
    }
    this.sharedOf.set(association, bound);
    const target = addressForSocket(ip, bound.dualStack) ?? ip;
    const channel: ClientChannel = {
      // A dgram socket may keep the payload until its send completes; the helper copies it at once.
      keepsPayload: !bound.transient,
      send: (header, payload, port) => bound.send(header, payload, port, target),
      release: () => this.unregister(association),
    };
    // With workers, the reply waits until every sibling knows where this client's datagrams go.
    const claimed = this.steer ? this.steer.claim(ip, association.clientPort) : Promise.resolve();
    return { channel, port: bound.port, claimed };
  }

  close(): Promise<void> {
    for (const socket of [...this.sockets.values(), ...this.attracted.values()]) {
      if (socket === null) continue;
      const inode = this.inodes.get(socket);
      if (inode !== undefined) this.kernelDrops?.untrackInode(inode);
      socket.close();
    }
    this.inodes.clear();
    this.hostOf.clear();
    this.sharedOf.clear();
    this.attracted.clear();
    this.connectedSockets = 0;
    this.sockets.clear();
    this.byEndpoint.clear();
    this.endpoints = 0;
    this.waiting.clear();
    this.memoOwner = null;
    return Promise.resolve();
  }

  /** Associations known to the demultiplexer (for leak checks). */
  get size(): number {
    let waiting = 0;
    for (const set of this.waiting.values()) waiting += set.size;
    return this.endpoints + waiting;
  }

  private socketFor(localHost: string): RelaySocket | undefined {
    // The socket on the very address the client reached, else a wildcard one that covers it.
    const plain = unmapAddress(localHost);
    const wildcard = plain.includes(':') ? undefined : this.sockets.get('0.0.0.0');
    return this.sockets.get(plain) ?? wildcard ?? this.sockets.get('::');
  }

  private unregister(association: Association): void {
    if (this.memoOwner === association) this.memoOwner = null;
    this.sharedOf.delete(association);
    const own = this.attracted.get(association);
    this.attracted.delete(association);
    if (own) {
      this.connectedSockets--;
      const inode = this.inodes.get(own);
      this.inodes.delete(own);
      if (inode !== undefined) this.kernelDrops?.untrackInode(inode);
      own.close();
    }
    const ip = association.client;
    if (association.clientPort !== null && this.ownerAt(ip, association.clientPort) === association) {
      this.deleteOwner(ip, association.clientPort);
      this.steer?.release(ip, association.clientPort);
    }
    const set = this.waiting.get(ip);
    if (set?.delete(association)) {
      if (set.size === 0) this.waiting.delete(ip);
      this.steer?.release(ip, null);
    }
  }

  /** A datagram on a shared socket (with the helper, a view valid only during the call). */
  onDatagram(datagram: Buffer, address: string, port: number): void {
    const memo = this.memoOwner;
    if (memo !== null && port === this.memoPort && address === this.memoAddress) return memo.fromClient(datagram);
    if (address !== this.rawAddress) {
      this.rawAddress = address;
      this.rawIp = unmapAddress(address);
    }
    const ip = this.rawIp;
    const owner = this.ownerAt(ip, port);
    if (owner) {
      this.memoAddress = address;
      this.memoPort = port;
      this.memoOwner = owner;
      return owner.fromClient(datagram);
    }
    const steer = this.steer;
    if (steer === null) return this.deliverWaiting(datagram, ip, port);
    const sibling = steer.ownerOf(ip, port);
    const waitingHere = this.waiting.get(ip)?.size ?? 0;
    if (sibling >= 0 && waitingHere === 0) {
      this.stats.steeredDatagrams++;
      return steer.forward(sibling, datagram, ip, port);
    }
    // A sibling waits for this IP too: two associations could own the sender, so neither gets it.
    if (sibling !== -1) return this.drop('ambiguous');
    this.deliverWaiting(datagram, ip, port);
  }

  /** Sends to clients the OS refused after accepting them. */
  onSendError(code: string, count: number): void {
    this.stats.drops['send-error'] += count;
    if (this.log.isLevelEnabled('debug')) this.log.debug({ code, count }, 'fixed-port UDP send refused');
  }

  /** A shared socket can no longer be read: said loudly, since its clients' datagrams now go unheard. */
  onSocketFailed(reason: string): void {
    this.log.error({ reason }, 'fixed-port UDP socket failed');
  }

  /** A datagram a sibling worker passed on: ours, or dropped (never passed on again). */
  deliver(datagram: Buffer, ip: string, port: number): void {
    const owner = this.ownerAt(ip, port);
    if (owner) owner.fromClient(datagram);
    else this.deliverWaiting(datagram, ip, port);
    // Still ours (fromClient may have ended it, a drop leaves none): its next datagrams come here.
    const now = this.ownerAt(ip, port);
    if (now !== undefined) this.attract(now, ip, port);
  }

  /**
   * An association whose client's datagrams the kernel gives to a sibling: one socket of the port,
   * connected to the client, makes the kernel give them to this worker instead (once per association;
   * where it cannot be made, on dgram or out of descriptors, the sibling keeps passing them on).
   */
  private attract(association: Association, ip: string, port: number): void {
    if (this.attracted.has(association) || this.connectedSockets >= this.connectedLimit) return;
    this.attracted.set(association, null);
    const shared = this.sharedOf.get(association);
    const host = shared === undefined ? undefined : this.hostOf.get(shared);
    const peer = shared === undefined ? null : addressForSocket(ip, shared.dualStack);
    if (shared === undefined || host === undefined || peer === null) return;
    let socket: RelaySocket | null;
    try {
      socket = openClientSocket(host, shared.port, peer, port);
    } catch (error) {
      if (this.log.isLevelEnabled('debug')) this.log.debug({ err: error, client: `${ip}:${port}` }, 'no connected socket for a steered client');
      return;
    }
    if (socket === null) return;
    socket.receive(new ClientPort(this, association, peer, port));
    this.attracted.set(association, socket);
    this.connectedSockets++;
    const inode = socket.inode ?? -1;
    if (this.kernelDrops && inode >= 0) {
      this.inodes.set(socket, inode);
      this.kernelDrops.trackInode(inode);
    }
  }

  /** The sender's first datagram: it goes to the one association from its IP still waiting for it. */
  private deliverWaiting(datagram: Buffer, ip: string, port: number): void {
    const set = this.waiting.get(ip);
    if (set === undefined || set.size === 0) return this.drop('unknown-client');
    if (set.size > 1) return this.drop('ambiguous');
    const [association] = set as Set<Association> & { size: 1 };
    set.clear();
    this.waiting.delete(ip);
    association!.learnPort(port);
    this.setOwner(ip, port, association!);
    if (this.steer) {
      // The exact claim goes first: siblings must never see a moment with neither claim, or a
      // datagram read there in between would be dropped as unknown. (A sibling that already owns
      // this endpoint keeps it: its datagrams were steered there.)
      this.steer.claim(ip, port).catch(() => {});
      this.steer.release(ip, null);
    }
    association!.fromClient(datagram);
  }

  private ownerAt(ip: string, port: number): Association | undefined {
    return this.byEndpoint.get(ip)?.get(port);
  }

  private setOwner(ip: string, port: number, association: Association): void {
    let ports = this.byEndpoint.get(ip);
    if (ports === undefined) this.byEndpoint.set(ip, (ports = new Map()));
    if (!ports.has(port)) this.endpoints++;
    ports.set(port, association);
  }

  private deleteOwner(ip: string, port: number): void {
    const ports = this.byEndpoint.get(ip);
    if (ports?.delete(port) !== true) return;
    this.endpoints--;
    if (ports.size === 0) this.byEndpoint.delete(ip);
  }

  private drop(reason: 'unknown-client' | 'ambiguous'): void {
    this.stats.clientDatagrams++;
    this.stats.drops[reason]++;
  }
}

/** This process's soft limit of open descriptors (RLIMIT_NOFILE), from procfs; 1024 where unknown. */
function descriptorLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'latin1').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return Number.MAX_SAFE_INTEGER;
    const value = Number(soft);
    return Number.isSafeInteger(value) && value > 0 ? value : 1024;
  } catch {
    return 1024;
  }
}
