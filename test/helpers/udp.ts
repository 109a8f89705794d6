import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { Peer } from './peer.js';
import { addressBytes, handshake, readReply, request, type TestReply } from './socks-bytes.js';

export interface Datagram {
  readonly data: Buffer;
  readonly from: RemoteInfo;
}

/** A UDP socket that queues what it receives and hands it out with deadlines. */
export class UdpPeer {
  private queue: Datagram[] = [];
  private waiter: (() => void) | null = null;

  private constructor(readonly socket: Socket) {
    socket.on('message', (data, from) => {
      this.queue.push({ data, from });
      this.waiter?.();
    });
  }

  static async bind(host = '127.0.0.1', port = 0): Promise<UdpPeer> {
    const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => resolve());
    });
    return new UdpPeer(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  get pending(): number {
    return this.queue.length;
  }

  send(data: Buffer, port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.send(data, port, host, (error) => (error ? reject(error) : resolve())));
  }

  async receive(timeoutMs = 2000): Promise<Datagram> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no datagram within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.queue.shift()!;
  }

  /** Asserts that nothing arrives for `ms` milliseconds (used only to prove a drop). */
  async nothingFor(ms: number): Promise<void> {
    const got = await this.receive(ms).catch(() => null);
    if (got) throw new Error(`expected no datagram, got ${got.data.length} bytes from ${got.from.address}:${got.from.port}`);
  }

  private closed = false;

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}

/** A UDP echo target that counts what it received. */
export async function startUdpEcho(host = '127.0.0.1'): Promise<{ port: number; received: () => number; sizes: number[]; close: () => void }> {
  const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  let count = 0;
  const sizes: number[] = [];
  socket.on('message', (data, from) => {
    count++;
    sizes.push(data.length);
    socket.send(data, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, host, () => resolve()));
  return { port: socket.address().port, received: () => count, sizes, close: () => socket.close() };
}

/** RFC 1928 §7 header + DATA, from the test's own encoder. */
export function wrap(host: string, port: number, data: Buffer, frag = 0): Buffer {
  return Buffer.concat([Buffer.from([0, 0, frag]), addressBytes(host, port), data]);
}

/** Splits a datagram into header fields and DATA (test-side parser). */
export function unwrap(datagram: Buffer): { frag: number; atyp: number; host: string; port: number; data: Buffer } {
  const atyp = datagram[3]!;
  let at = 4;
  let host: string;
  if (atyp === 1) {
    host = [...datagram.subarray(4, 8)].join('.');
    at = 8;
  } else if (atyp === 4) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(datagram.readUInt16BE(4 + i).toString(16));
    host = new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
    at = 20;
  } else {
    const length = datagram[4]!;
    host = datagram.toString('latin1', 5, 5 + length);
    at = 5 + length;
  }
  return { frag: datagram[2]!, atyp, host, port: datagram.readUInt16BE(at), data: datagram.subarray(at + 2) };
}

export interface TestAssociation {
  readonly control: Peer;
  readonly reply: TestReply;
  readonly udp: UdpPeer;
  /** Sends DATA to host:port through the relay. */
  sendTo(host: string, port: number, data: Buffer, frag?: number): Promise<void>;
  close(): void;
}

/**
 * Opens a control connection, sends UDP ASSOCIATE and binds the client's UDP socket. By default
 * the request declares DST.ADDR 0.0.0.0 and the UDP socket's port; `declare: 'zero'` sends 0.0.0.0:0.
 */
export async function openAssociation(
  socksPort: number,
  options: { proxyHost?: string; clientHost?: string; from?: string; declare?: 'port' | 'zero'; credentials?: { user: string; pass: string } } = {},
): Promise<TestAssociation> {
  const proxyHost = options.proxyHost ?? '127.0.0.1';
  // `from`: both the control connection and the UDP socket come from this address.
  const udp = await UdpPeer.bind(options.from ?? options.clientHost ?? proxyHost);
  const control = await Peer.connect(socksPort, proxyHost, options.from);
  await handshake(control, options.credentials);
  const unspecified = isIPv6(proxyHost) ? '::' : '0.0.0.0';
  control.write(request(3, unspecified, options.declare === 'zero' ? 0 : udp.port));
  const reply = await readReply(control);
  return {
    control,
    reply,
    udp,
    sendTo: (host, port, data, frag = 0) => udp.send(wrap(host, port, data, frag), reply.port, reply.host),
    close: () => {
      control.destroy();
      udp.close();
    },
  };
}

/** A DNS query for `name` type A, id 0x1234 (RFC 1035 §4.1). */
export function dnsQuery(name: string, id = 0x1234): Buffer {
  const labels = name.split('.').flatMap((label) => [Buffer.from([label.length]), Buffer.from(label)]);
  return Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** The A records of a DNS response (no name compression needed beyond pointers in answers). */
export function dnsAnswers(response: Buffer): { id: number; rcode: number; addresses: string[] } {
  const id = response.readUInt16BE(0);
  const rcode = response[3]! & 0x0f;
  const answers = response.readUInt16BE(6);
  let at = 12;
  while (response[at] !== 0) at += response[at]! + 1;
  at += 5;
  const addresses: string[] = [];
  for (let i = 0; i < answers; i++) {
    if ((response[at]! & 0xc0) === 0xc0) at += 2;
    else {
      while (response[at] !== 0) at += response[at]! + 1;
      at += 1;
    }
    const type = response.readUInt16BE(at);
    const length = response.readUInt16BE(at + 8);
    if (type === 1 && length === 4) addresses.push([...response.subarray(at + 10, at + 14)].join('.'));
    at += 10 + length;
  }
  return { id, rcode, addresses };
}
