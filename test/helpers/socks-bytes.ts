import { isIPv4, isIPv6 } from 'node:net';
import { Peer } from './peer.js';

// An independent, deliberately plain encoder of SOCKS5 messages for tests: it shares no code with
// src/protocol, so a bug there cannot hide itself.

export const greeting = (...methods: number[]): Buffer => Buffer.from([5, methods.length, ...methods]);

export function userPass(user: string, pass: string): Buffer {
  const u = Buffer.from(user);
  const p = Buffer.from(pass);
  return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]);
}

function ipv6Bytes(host: string): number[] {
  const [head, tail] = host.split('::') as [string, string | undefined];
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const a = parse(head);
  const b = tail === undefined ? [] : parse(tail);
  const groups = [...a, ...new Array(8 - a.length - b.length).fill(0), ...b];
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

export function addressBytes(host: string, port: number): Buffer {
  const portBytes = [port >> 8, port & 0xff];
  if (isIPv4(host)) return Buffer.from([1, ...host.split('.').map(Number), ...portBytes]);
  if (isIPv6(host)) return Buffer.from([4, ...ipv6Bytes(host), ...portBytes]);
  const name = Buffer.from(host, 'latin1');
  return Buffer.concat([Buffer.from([3, name.length]), name, Buffer.from(portBytes)]);
}

export const request = (command: number, host: string, port: number): Buffer =>
  Buffer.concat([Buffer.from([5, command, 0]), addressBytes(host, port)]);

export interface TestReply {
  readonly version: number;
  readonly code: number;
  readonly atyp: number;
  readonly host: string;
  readonly port: number;
}

/** Reads one whole reply (or request-shaped message) from `peer`. */
export async function readReply(peer: Peer, timeoutMs = 3000): Promise<TestReply> {
  const head = await peer.read(4, timeoutMs);
  const atyp = head[3]!;
  let host: string;
  if (atyp === 1) host = [...(await peer.read(4, timeoutMs))].join('.');
  else if (atyp === 4) {
    const b = await peer.read(16, timeoutMs);
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    host = new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
  } else if (atyp === 3) {
    const length = (await peer.read(1, timeoutMs))[0]!;
    host = (await peer.read(length, timeoutMs)).toString('latin1');
  } else throw new Error(`reply with address type ${atyp}`);
  const port = (await peer.read(2, timeoutMs)).readUInt16BE(0);
  return { version: head[0]!, code: head[1]!, atyp, host, port };
}

/** Greeting (no auth or username/password) and method selection, checked. */
export async function handshake(peer: Peer, credentials?: { user: string; pass: string }): Promise<void> {
  peer.write(credentials ? greeting(2) : greeting(0));
  const selection = await peer.read(2);
  if (selection[1] !== (credentials ? 2 : 0)) throw new Error(`server selected method ${selection[1]}`);
  if (credentials) {
    peer.write(userPass(credentials.user, credentials.pass));
    const status = await peer.read(2);
    if (status[1] !== 0) throw new Error(`authentication failed with status ${status[1]}`);
  }
}

/**
 * The RFC 1929 status a login as `user` from `from` gets (0: success); null when the server closed
 * without one (a blocked address may be closed as soon as it connects).
 */
export async function loginStatus(port: number, from: string, user: string, pass: string): Promise<number | null> {
  const peer = await Peer.connect(port, '127.0.0.1', from);
  try {
    peer.write(greeting(2));
    if ((await peer.read(2).catch(() => null)) === null) return null;
    peer.write(userPass(user, pass));
    const reply = await peer.read(2).catch(() => null);
    return reply === null ? null : reply[1]!;
  } finally {
    peer.destroy();
  }
}
