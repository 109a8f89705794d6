import { isIPv4, isIPv6 } from 'node:net';

/**
 * IPv6 text ↔ the 16 bytes on the wire, with Node alone, so the codec has no dependency.
 * Text out is RFC 5952 §4: lower-case hex groups without leading zeros, the longest run of two or
 * more zero groups (the first, on a tie) written "::"; an IPv4 tail stays in hex ("::ffff:c000:201").
 */
export function ipv6ToBytes(text: string): Uint8Array {
  const zone = text.indexOf('%');
  let rest = zone >= 0 ? text.slice(0, zone) : text;
  if (!isIPv6(rest)) throw new TypeError(`"${text}" is not an IPv6 address`);
  const bytes = new Uint8Array(16);
  let tail: number[] = [];
  // A dotted IPv4 tail ("::ffff:192.0.2.1") stands for the last two groups.
  const lastColon = rest.lastIndexOf(':');
  const dotted = rest.slice(lastColon + 1);
  if (isIPv4(dotted)) {
    const octets = dotted.split('.').map(Number);
    tail = [((octets[0] ?? 0) << 8) | (octets[1] ?? 0), ((octets[2] ?? 0) << 8) | (octets[3] ?? 0)];
    rest = rest.slice(0, lastColon + 1);
    if (!rest.endsWith('::')) rest = rest.slice(0, -1);
  }
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = rest.indexOf('::');
  let all: number[];
  if (gap >= 0) {
    const head = groups(rest.slice(0, gap));
    const back = [...groups(rest.slice(gap + 2)), ...tail];
    all = [...head, ...new Array<number>(8 - head.length - back.length).fill(0), ...back];
  } else {
    all = [...groups(rest), ...tail];
  }
  for (let i = 0; i < 8; i++) {
    const group = all[i] ?? 0;
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  }
  return bytes;
}

/** The RFC 5952 text of 16 address bytes. */
export function ipv6FromBytes(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (from: number, to: number): string => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

/** Canonical (RFC 5952) text of an IPv6 address given in any valid spelling. */
export function canonicalIpv6(text: string): string {
  return ipv6FromBytes(ipv6ToBytes(text));
}
