// A DNS server on loopback that answers from a table and records every question it gets: the test
// of where names are resolved counts on it (RFC 1035 §4.1 messages over UDP).
import { createSocket } from 'node:dgram';

export interface CountingDns {
  /** "IP:PORT", for a resolver's servers. */
  readonly server: string;
  /** Every question, as "name A" / "name AAAA", in order. */
  readonly questions: string[];
  /** Questions for `name` (any type). */
  asked(name: string): number;
  close(): Promise<void>;
}

const TYPES: Record<number, string> = { 1: 'A', 28: 'AAAA' };

/** Answers A questions with `lookup(name)` (NXDOMAIN when it gives undefined). */
export async function startCountingDns(lookup: (name: string) => string | undefined): Promise<CountingDns> {
  const socket = createSocket('udp4');
  const questions: string[] = [];
  socket.on('message', (query, from) => {
    if (query.length < 12) return;
    const labels: string[] = [];
    let at = 12;
    while (at < query.length && query[at] !== 0) {
      labels.push(query.toString('latin1', at + 1, at + 1 + query[at]!));
      at += query[at]! + 1;
    }
    const name = labels.join('.').toLowerCase();
    const type = query.readUInt16BE(at + 1);
    const questionEnd = at + 5;
    questions.push(`${name} ${TYPES[type] ?? type}`);
    const address = lookup(name);
    const answered = address !== undefined && type === 1;
    const header = Buffer.from([query[0]!, query[1]!, 0x81, address === undefined ? 0x83 : 0x80, 0, 1, 0, answered ? 1 : 0, 0, 0, 0, 0]);
    const parts = [header, query.subarray(12, questionEnd)];
    if (answered) parts.push(Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address.split('.').map(Number)]));
    socket.send(Buffer.concat(parts), from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    server: `127.0.0.1:${socket.address().port}`,
    questions,
    asked: (name) => questions.filter((q) => q.startsWith(`${name} `)).length,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
