import type { RemoteInfo } from 'node:dgram';
import type { Logger } from 'pino';
import type { DemuxSteer } from '../udp/demux.js';
import { bindUdp, enlargeReceiveBuffer, type BoundUdp } from '../udp/socket.js';
import type { UdpStats } from '../udp/stats.js';
import type { ClaimCounts } from '../observe/admin.js';
import { sendToPrimary, type ToWorker } from './messages.js';
import { MAX_UDP_PAYLOAD } from 'socksgate-client/protocol';

/**
 * Who owns which client endpoint of the shared fixed UDP port: "ip|port" for a declared or learned
 * port, "ip|*" for an association still waiting for its client's first datagram. Counts per worker,
 * since one worker may hold several associations waiting on one IP.
 */
export class ClaimTable {
  private readonly claims = new Map<string, Map<number, number>>();

  add(worker: number, ip: string, port: number | null): void {
    const key = claimKey(ip, port);
    let owners = this.claims.get(key);
    if (!owners) this.claims.set(key, (owners = new Map()));
    owners.set(worker, (owners.get(worker) ?? 0) + 1);
  }

  remove(worker: number, ip: string, port: number | null): void {
    const key = claimKey(ip, port);
    const owners = this.claims.get(key);
    const count = owners?.get(worker);
    if (!owners || count === undefined) return;
    if (count > 1) owners.set(worker, count - 1);
    else owners.delete(worker);
    if (owners.size === 0) this.claims.delete(key);
  }

  /** Endpoints (or waiting IPs) claimed: for leak checks and the status page. */
  get size(): number {
    return this.claims.size;
  }

  /** Forgets a worker that is gone. */
  dropWorker(worker: number): void {
    for (const [key, owners] of this.claims) {
      owners.delete(worker);
      if (owners.size === 0) this.claims.delete(key);
    }
  }

  /** Another worker holding exactly this endpoint, if any (waiting claims never conflict). */
  conflict(worker: number, ip: string, port: number | null): number | null {
    if (port === null) return null;
    for (const owner of this.claims.get(claimKey(ip, port))?.keys() ?? []) if (owner !== worker) return owner;
    return null;
  }

  /** The worker owning `ip|port`, else the only one waiting for `ip`; -1 when none, -2 when several wait. */
  ownerOf(ip: string, port: number): number {
    const exact = this.claims.get(claimKey(ip, port));
    if (exact) for (const owner of exact.keys()) return owner;
    const waiting = this.claims.get(claimKey(ip, null));
    if (!waiting) return -1;
    let found = -1;
    let total = 0;
    for (const [owner, count] of waiting) {
      found = owner;
      total += count;
    }
    return total === 1 ? found : total === 0 ? -1 : -2;
  }

  /** Every claim, for a worker that starts late. */
  entries(): Array<{ worker: number; ip: string; port: number | null; count: number }> {
    const out: Array<{ worker: number; ip: string; port: number | null; count: number }> = [];
    for (const [key, owners] of this.claims) {
      const cut = key.lastIndexOf('|');
      const portText = key.slice(cut + 1);
      for (const [worker, count] of owners) out.push({ worker, ip: key.slice(0, cut), port: portText === '*' ? null : Number(portText), count });
    }
    return out;
  }
}

function claimKey(ip: string, port: number | null): string {
  return `${ip}|${port ?? '*'}`;
}

// A passed-on datagram: [length of the sender's IP text][IP text][sender's port, 2 bytes][datagram].
function steerHeader(ip: string, port: number): Buffer {
  const header = Buffer.allocUnsafe(3 + ip.length);
  header[0] = ip.length;
  header.write(ip, 1, 'latin1');
  header.writeUInt16BE(port, 1 + ip.length);
  return header;
}

// Largest UDP payload on IPv6 loopback (65535 - 8), and on IPv4 loopback (65535 - 20 - 8).
const MAX_STEER_PAYLOAD_V6 = 65527;
const MAX_STEER_PAYLOAD_V4 = MAX_UDP_PAYLOAD;

/**
 * A worker's side of the shared fixed port. Every worker holds the same UDP socket, so a client's
 * datagram reaches whichever worker reads it first. This worker knows (from the primary) which
 * endpoints its siblings own and passes their datagrams to them over loopback, tagged with the
 * real sender; it accepts passed-on datagrams only from its siblings' steer sockets. Claims are
 * acknowledged by every sibling before the ASSOCIATE reply goes out, so no first datagram can
 * arrive before the workers know where it belongs.
 */
export class WorkerSteering implements DemuxSteer {
  private readonly table = new ClaimTable();
  private readonly peers = new Map<number, { port: number; host: string }>();
  private readonly peerPorts = new Set<number>();
  private readonly pending = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  private seq = 0;
  private socket: BoundUdp | null = null;
  private host = '::1';
  private deliver: (datagram: Buffer, ip: string, port: number) => void = () => {};
  private stats: UdpStats | null = null;

  constructor(private readonly log: Logger) {}

  /** Binds the loopback steer socket and tells the primary where it is. */
  async open(): Promise<void> {
    try {
      this.socket = await bindUdp(0, '::1');
    } catch {
      this.host = '127.0.0.1';
      this.socket = await bindUdp(0, '127.0.0.1');
    }
    enlargeReceiveBuffer(this.socket.socket);
    this.socket.socket.on('message', this.onMessage);
    this.socket.socket.on('error', (error) => this.log.warn({ err: error }, 'steer socket error'));
    sendToPrimary({ sg: 'steer-port', port: this.socket.port, host: this.host });
  }

  /** The server this worker runs: its counters, and where passed-on datagrams go. */
  serve(stats: UdpStats, deliver: (datagram: Buffer, ip: string, port: number) => void): void {
    this.stats = stats;
    this.deliver = deliver;
  }

  claim(ip: string, port: number | null): Promise<void> {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      sendToPrimary({ sg: 'claim', seq, ip, port });
    });
  }

  release(ip: string, port: number | null): void {
    sendToPrimary({ sg: 'release', ip, port });
  }

  ownerOf(ip: string, port: number): number {
    return this.table.ownerOf(ip, port);
  }

  /** Its siblings' claims this worker knows of (its own are in its demultiplexer), and its own still waiting for acknowledgement. */
  get claims(): ClaimCounts {
    return { known: this.table.size, pending: this.pending.size };
  }

  forward(worker: number, datagram: Buffer, ip: string, port: number): void {
    const peer = this.peers.get(worker);
    const socket = this.socket;
    const stats = this.stats;
    if (!peer || !socket) {
      if (stats) stats.drops['unknown-client']++;
      return;
    }
    const header = steerHeader(ip, port);
    if (header.length + datagram.length > (peer.host === '::1' ? MAX_STEER_PAYLOAD_V6 : MAX_STEER_PAYLOAD_V4)) {
      if (stats) stats.drops['too-large']++;
      return;
    }
    socket.socket.send([header, datagram], peer.port, peer.host, (error) => {
      if (error && stats) stats.drops['send-error']++;
    });
  }

  /** A message from the primary about siblings and claims. */
  handle(message: ToWorker): void {
    switch (message.sg) {
      case 'peer':
        this.peers.set(message.worker, { port: message.port, host: message.host });
        this.peerPorts.add(message.port);
        break;
      case 'peer-gone': {
        const peer = this.peers.get(message.worker);
        if (peer) this.peerPorts.delete(peer.port);
        this.peers.delete(message.worker);
        this.table.dropWorker(message.worker);
        break;
      }
      case 'claim':
        this.table.add(message.worker, message.ip, message.port);
        sendToPrimary({ sg: 'ack', seq: message.seq });
        break;
      case 'release':
        this.table.remove(message.worker, message.ip, message.port);
        break;
      case 'claimed': {
        const waiter = this.pending.get(message.seq);
        this.pending.delete(message.seq);
        if (message.error) waiter?.reject(new Error(message.error));
        else waiter?.resolve();
        break;
      }
      default:
        break;
    }
  }

  close(): void {
    for (const waiter of this.pending.values()) waiter.reject(new Error('worker shutting down'));
    this.pending.clear();
    this.socket?.socket.close();
    this.socket = null;
  }

  private readonly onMessage = (data: Buffer, from: RemoteInfo): void => {
    // Only a sibling's steer socket may pass datagrams on: anyone else could forge a client's address.
    if (from.address !== this.host || !this.peerPorts.has(from.port)) return;
    const length = data[0] ?? 0;
    if (data.length < 3 + length) return;
    const ip = data.toString('latin1', 1, 1 + length);
    const port = data.readUInt16BE(1 + length);
    this.deliver(data.subarray(3 + length), ip, port);
  };
}
