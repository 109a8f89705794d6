import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import type { Logger } from 'pino';
import pino from 'pino';
import { associate, type UdpAssociation } from 'socksgate-client';
import type { ProxyInput } from 'socksgate-client';
import { bindUdp } from '../udp/socket.js';

export interface UdpForwardOptions {
  readonly proxy: ProxyInput;
  /** Local address and port to listen on. */
  readonly listen: { readonly host: string; readonly port: number };
  /** The one destination every datagram goes to. */
  readonly to: { readonly host: string; readonly port: number };
  /** A local peer silent for this long loses its association (default 60 s). */
  readonly idleTimeoutMs?: number;
  /** Most local peers at once (default 1024); datagrams from more are dropped. */
  readonly maxPeers?: number;
  readonly logger?: Logger;
}

interface PeerState {
  association: UdpAssociation | null;
  /** Datagrams that arrived while the association was being set up. */
  queue: Buffer[];
  lastSeen: number;
}

// Datagrams held per peer while its association is set up.
const MAX_QUEUED = 64;

/**
 * A local UDP port whose traffic goes through the proxy to one fixed destination: one association
 * per local peer, so replies find their way back to the right program.
 */
export class UdpForwarder {
  private socket: UdpSocket | null = null;
  private readonly peers = new Map<string, PeerState>();
  private sweeper: NodeJS.Timeout | null = null;
  private readonly log: Logger;
  /** Datagrams dropped: too many peers, queue full, or the proxy refused an association. */
  dropped = 0;

  constructor(private readonly options: UdpForwardOptions) {
    this.log = options.logger ?? pino({ level: 'silent' });
  }

  get peerCount(): number {
    return this.peers.size;
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = this.options.listen;
    const { socket } = await bindUdp(port, host);
    socket.on('message', this.onLocal);
    socket.on('error', (error) => this.log.warn({ err: error }, 'udp-forward socket error'));
    this.socket = socket;
    const idle = this.options.idleTimeoutMs ?? 60_000;
    this.sweeper = setInterval(() => this.sweep(idle), Math.max(50, Math.min(idle / 2, 10_000)));
    const address = socket.address();
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const [key, peer] of this.peers) {
      peer.association?.close();
      this.peers.delete(key);
    }
    const socket = this.socket;
    this.socket = null;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  private readonly onLocal = (datagram: Buffer, from: RemoteInfo): void => {
    const key = `${from.address}|${from.port}`;
    let peer = this.peers.get(key);
    if (!peer) {
      if (this.peers.size >= (this.options.maxPeers ?? 1024)) {
        this.dropped++;
        return;
      }
      peer = { association: null, queue: [datagram], lastSeen: Date.now() };
      this.peers.set(key, peer);
      this.open(key, peer, from);
      return;
    }
    peer.lastSeen = Date.now();
    if (peer.association) this.forward(peer.association, datagram);
    else if (peer.queue.length < MAX_QUEUED) peer.queue.push(datagram);
    else this.dropped++;
  };

  private open(key: string, peer: PeerState, from: RemoteInfo): void {
    associate({ proxy: this.options.proxy, reassociate: true }).then(
      (association) => {
        if (this.peers.get(key) !== peer || !this.socket) return association.close();
        peer.association = association;
        const socket = this.socket;
        association.on('message', ({ payload }) => {
          peer.lastSeen = Date.now();
          socket.send(payload, from.port, from.address);
        });
        association.on('close', () => {
          if (this.peers.get(key) === peer) this.peers.delete(key);
        });
        this.log.debug({ peer: key, relay: association.relay }, 'udp-forward: association up');
        for (const datagram of peer.queue.splice(0)) this.forward(association, datagram);
      },
      (error: Error) => {
        this.log.warn({ peer: key, err: error.message }, 'udp-forward: the proxy refused an association');
        this.dropped += peer.queue.length;
        if (this.peers.get(key) === peer) this.peers.delete(key);
      },
    );
  }

  private forward(association: UdpAssociation, datagram: Buffer): void {
    association.send(datagram, this.options.to.host, this.options.to.port).catch(() => this.dropped++);
  }

  private sweep(idleMs: number): void {
    const now = Date.now();
    for (const [key, peer] of this.peers) {
      if (peer.association && now - peer.lastSeen >= idleMs) {
        this.peers.delete(key);
        peer.association.close();
      }
    }
  }
}
