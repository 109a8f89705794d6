import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import type { Logger } from 'pino';
import pino from 'pino';
import { associate, type UdpAssociation } from 'socksgate-client';
import { connect } from 'socksgate-client';
import type { ProxyInput } from 'socksgate-client';
import { bindUdp } from '../udp/socket.js';

export interface DnsStubOptions {
  readonly proxy: ProxyInput;
  readonly listen: { readonly host: string; readonly port: number };
  /** The DNS server queries go to, through the proxy. */
  readonly upstream: { readonly host: string; readonly port: number };
  /** How long to wait for an answer over UDP before asking again over TCP (default 2000 ms). */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
}

interface Pending {
  readonly client: RemoteInfo;
  readonly query: Buffer;
  readonly timer: NodeJS.Timeout;
}

/** Counters a test or an operator can read. */
export interface DnsStubStats {
  queries: number;
  /** Answered from a UDP reply. */
  udpAnswers: number;
  /** Asked again over TCP because the UDP reply was truncated (TC bit). */
  tcpAfterTruncation: number;
  /** Asked again over TCP because UDP gave no answer in time (or is unavailable). */
  tcpAfterTimeout: number;
  /** Answered SERVFAIL because both ways failed. */
  failures: number;
}

const HEADER = 12;

/**
 * A DNS stub resolver on a local UDP port: forwards each query through the proxy's UDP ASSOCIATE
 * to one upstream server, and asks again over CONNECT (DNS over TCP, RFC 7766) when the answer is
 * truncated or UDP fails. Query IDs are rewritten so clients can never collide.
 */
export class DnsStub {
  readonly stats: DnsStubStats = { queries: 0, udpAnswers: 0, tcpAfterTruncation: 0, tcpAfterTimeout: 0, failures: 0 };
  private socket: UdpSocket | null = null;
  private association: UdpAssociation | null = null;
  private associating: Promise<UdpAssociation | null> | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = Math.floor(Math.random() * 0x10000);
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly options: DnsStubOptions) {
    this.log = options.logger ?? pino({ level: 'silent' });
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = this.options.listen;
    const { socket } = await bindUdp(port, host);
    socket.on('message', this.onQuery);
    socket.on('error', (error) => this.log.warn({ err: error }, 'dns stub socket error'));
    this.socket = socket;
    const address = socket.address();
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.pending.values()) clearTimeout(pending.timer);
    this.pending.clear();
    this.association?.close();
    this.association = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  private readonly onQuery = (query: Buffer, client: RemoteInfo): void => {
    if (query.length < HEADER) return;
    this.stats.queries++;
    this.udpAssociation().then((association) => {
      if (this.closed) return;
      if (!association) {
        this.stats.tcpAfterTimeout++;
        return void this.overTcp(query, client);
      }
      const id = this.allocateId();
      if (id < 0) {
        this.stats.failures++;
        return void this.socket?.send(servfail(query), client.port, client.address);
      }
      const rewritten = Buffer.from(query);
      rewritten.writeUInt16BE(id, 0);
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          this.stats.tcpAfterTimeout++;
          void this.overTcp(query, client);
        }
      }, this.options.timeoutMs ?? 2000);
      this.pending.set(id, { client, query, timer });
      association.send(rewritten, this.options.upstream.host, this.options.upstream.port).catch(() => {
        // The timer takes it to TCP.
      });
    }).catch((error: Error) => this.log.error({ err: error }, 'dns stub: query handling failed'));
  };

  /** One association for every query; when the proxy cannot give one, every query goes over TCP. */
  private udpAssociation(): Promise<UdpAssociation | null> {
    if (this.association && !this.association.isClosed) return Promise.resolve(this.association);
    this.associating ??= associate({ proxy: this.options.proxy, reassociate: true })
      .then((association) => {
        if (this.closed) {
          association.close();
          return null;
        }
        this.association = association;
        association.on('message', ({ payload, from }) => {
          if (from.port === this.options.upstream.port) this.onAnswer(payload);
        });
        return association;
      })
      .catch((error: Error) => {
        this.log.warn({ err: error.message }, 'dns stub: no UDP association, using TCP');
        return null;
      })
      .finally(() => {
        this.associating = null;
      });
    return this.associating;
  }

  private onAnswer(answer: Buffer): void {
    if (answer.length < HEADER) return;
    const pending = this.pending.get(answer.readUInt16BE(0));
    if (!pending) return;
    this.pending.delete(answer.readUInt16BE(0));
    clearTimeout(pending.timer);
    if ((answer[2]! & 0x02) !== 0) {
      this.stats.tcpAfterTruncation++;
      return void this.overTcp(pending.query, pending.client);
    }
    this.stats.udpAnswers++;
    const restored = Buffer.from(answer);
    restored.writeUInt16BE(pending.query.readUInt16BE(0), 0);
    this.socket?.send(restored, pending.client.port, pending.client.address);
  }

  private async overTcp(query: Buffer, client: RemoteInfo): Promise<void> {
    const timeoutMs = (this.options.timeoutMs ?? 2000) * 2;
    try {
      const socket = await connect({ proxy: this.options.proxy, host: this.options.upstream.host, port: this.options.upstream.port, timeoutMs });
      const answer = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let size = 0;
        const timer = setTimeout(() => finish(new Error('DNS over TCP timed out')), timeoutMs);
        const finish = (error: Error | null, value?: Buffer): void => {
          clearTimeout(timer);
          socket.destroy();
          if (error) reject(error);
          else resolve(value!);
        };
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          size += chunk.length;
          const all = size >= 2 ? Buffer.concat(chunks) : null;
          if (all && all.length >= 2 + all.readUInt16BE(0)) finish(null, all.subarray(2, 2 + all.readUInt16BE(0)));
        });
        socket.on('error', (error) => finish(error));
        socket.on('end', () => finish(new Error('upstream closed the TCP connection before answering')));
        const length = Buffer.alloc(2);
        length.writeUInt16BE(query.length);
        socket.write(Buffer.concat([length, query]));
      });
      this.socket?.send(answer, client.port, client.address);
    } catch (error) {
      this.stats.failures++;
      this.log.warn({ err: (error as Error).message }, 'dns stub: query failed over UDP and TCP');
      this.socket?.send(servfail(query), client.port, client.address);
    }
  }

  /** A query ID not in flight, or -1 when all 65,536 are. */
  private allocateId(): number {
    for (let i = 0; i < 0x10000; i++) {
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(this.nextId)) return this.nextId;
    }
    return -1;
  }
}

/** The query turned into a SERVFAIL answer (RFC 1035 §4.1.1: QR=1, RCODE=2). */
function servfail(query: Buffer): Buffer {
  const answer = Buffer.from(query);
  answer[2] = (answer[2]! | 0x80) & ~0x02;
  answer[3] = (answer[3]! & 0xf0) | 0x02;
  answer.writeUInt16BE(0, 6);
  answer.writeUInt16BE(0, 8);
  answer.writeUInt16BE(0, 10);
  return answer;
}
