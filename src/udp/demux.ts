import type { RemoteInfo } from 'node:dgram';
import type { Logger } from 'pino';
import type { Association, ClientChannel } from './association.js';
import { addressForSocket, bindUdp, unmapAddress, type BoundUdp } from './socket.js';
import type { UdpStats } from './stats.js';

/**
 * Fixed-port mode: one UDP socket per listen address, shared by every association, each datagram
 * routed to its association by the sender's address alone. A sender maps to an association when
 * its IP and port were declared in the request or fixed by an earlier datagram; otherwise to the one
 * association from that IP still waiting for its first datagram. With two or more waiting, the
 * datagram is dropped as ambiguous — never guessed, since a wrong guess hands one client's
 * association to another.
 */
export class FixedPortDemux {
  private readonly sockets = new Map<string, BoundUdp>();
  private readonly byEndpoint = new Map<string, Association>();
  private readonly waiting = new Map<string, Set<Association>>();

  constructor(
    private readonly stats: UdpStats,
    private readonly log: Logger,
  ) {}

  /** Binds the shared socket for one listen host (idempotent per host). */
  async bind(host: string, port: number): Promise<number> {
    const existing = this.sockets.get(host);
    if (existing) return existing.port;
    const bound = await bindUdp(port, host);
    bound.socket.on('message', this.onMessage);
    bound.socket.on('error', (error) => this.log.warn({ err: error, host, port }, 'fixed-port UDP socket error'));
    this.sockets.set(host, bound);
    return bound.port;
  }

  /**
   * Registers an association whose client reached the proxy on `localHost`. Returns the channel
   * to its client, or a reason when the declared endpoint already belongs to another association.
   */
  register(association: Association, localHost: string): { channel: ClientChannel; port: number } | string {
    const bound = this.socketFor(localHost);
    if (!bound) return `no fixed-port UDP socket for ${localHost}`;
    const ip = association.client;
    if (association.clientPort !== null) {
      const key = `${ip}|${association.clientPort}`;
      if (this.byEndpoint.has(key)) return `UDP endpoint ${ip}:${association.clientPort} already belongs to another association`;
      this.byEndpoint.set(key, association);
    } else {
      let set = this.waiting.get(ip);
      if (!set) this.waiting.set(ip, (set = new Set()));
      set.add(association);
    }
    const socket = bound.socket;
    const target = addressForSocket(ip, bound.dualStack) ?? ip;
    const stats = this.stats;
    const onSent = (error: Error | null): void => {
      if (error) stats.drops['send-error']++;
    };
    const channel: ClientChannel = {
      send: (header, payload, port) => socket.send([header, payload], port, target, onSent),
      release: () => this.unregister(association),
    };
    return { channel, port: bound.port };
  }

  close(): Promise<void> {
    const closing = [...this.sockets.values()].map((b) => new Promise<void>((resolve) => b.socket.close(() => resolve())));
    this.sockets.clear();
    this.byEndpoint.clear();
    this.waiting.clear();
    return Promise.all(closing).then(() => undefined);
  }

  /** Associations known to the demultiplexer (for leak checks). */
  get size(): number {
    let waiting = 0;
    for (const set of this.waiting.values()) waiting += set.size;
    return this.byEndpoint.size + waiting;
  }

  private socketFor(localHost: string): BoundUdp | undefined {
    // The socket on the very address the client reached, else a wildcard one that covers it.
    const plain = unmapAddress(localHost);
    const wildcard = plain.includes(':') ? undefined : this.sockets.get('0.0.0.0');
    return this.sockets.get(plain) ?? wildcard ?? this.sockets.get('::');
  }

  private unregister(association: Association): void {
    const ip = association.client;
    if (association.clientPort !== null) {
      const key = `${ip}|${association.clientPort}`;
      if (this.byEndpoint.get(key) === association) this.byEndpoint.delete(key);
    }
    const set = this.waiting.get(ip);
    if (set?.delete(association) && set.size === 0) this.waiting.delete(ip);
  }

  private readonly onMessage = (datagram: Buffer, from: RemoteInfo): void => {
    const ip = unmapAddress(from.address);
    const owner = this.byEndpoint.get(`${ip}|${from.port}`);
    if (owner) return owner.fromClient(datagram);
    const set = this.waiting.get(ip);
    if (set === undefined || set.size === 0) return this.drop('unknown-client');
    if (set.size > 1) return this.drop('ambiguous');
    const [association] = set as Set<Association> & { size: 1 };
    set.clear();
    this.waiting.delete(ip);
    association!.learnPort(from.port);
    this.byEndpoint.set(`${ip}|${from.port}`, association!);
    association!.fromClient(datagram);
  };

  private drop(reason: 'unknown-client' | 'ambiguous'): void {
    this.stats.clientDatagrams++;
    this.stats.drops[reason]++;
  }
}
