import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseCidr(text: string): Range {
  const [address, bits] = text.includes('/') ? ipaddr.parseCIDR(text) : [ipaddr.parse(text), -1];
  const prefix = bits < 0 ? (address.kind() === 'ipv4' ? 32 : 128) : bits;
  // Addresses are compared unmapped (::ffff:10.0.0.1 as 10.0.0.1), so ranges written mapped are too.
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), prefix - 96];
  }
  return [address, prefix];
}

// The last address parsed: one decision asks several sets about the same address (loopback,
// link-local, unspecified, the proxy's own), and parsing it is the costly part.
let lastText = '';
let lastAddress: ipaddr.IPv4 | ipaddr.IPv6 | null = null;

/** The address, unmapped and without a zone; null when it is not one. */
function parsed(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  if (ip === lastText) return lastAddress;
  let address: ipaddr.IPv4 | ipaddr.IPv6 | null;
  try {
    address = ipaddr.process(ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip);
  } catch {
    address = null;
  }
  lastText = ip;
  lastAddress = address;
  return address;
}

/**
 * "a.b.c.d" in plain decimal (each part 0-255, no leading zero) as a number 0…2³²-1; -1 for any
 * other text, which ipaddr.js then reads (the forms it also accepts: octal, hex, IPv6, mapped).
 */
export function dottedQuad(text: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && part === 0) return -1;
      part = part * 10 + (c - 0x30);
      if (part > 255) return -1;
      digits++;
    } else if (c === 0x2e && digits > 0 && dots < 3) {
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else {
      return -1;
    }
  }
  return digits > 0 && dots === 3 ? value * 256 + part : -1;
}

function ipv4Number(address: ipaddr.IPv4): number {
  const [a, b, c, d] = address.octets as [number, number, number, number];
  return ((a * 256 + b) * 256 + c) * 256 + d;
}

/**
 * A set of address ranges, IPv4 and IPv6; IPv4-mapped IPv6 addresses match their IPv4 ranges. The
 * ranges are parsed once; an IPv4 address is matched as a number against each range's first address
 * and prefix length, without parsing it into an object.
 */
export class CidrSet {
  /** IPv4 ranges as [first address, prefix length] pairs, flat. */
  private readonly v4: number[] = [];
  private readonly v6: Range[] = [];

  constructor(readonly texts: readonly string[]) {
    for (const range of texts.map(parseCidr)) {
      if (range[0].kind() === 'ipv4') this.v4.push(ipv4Number(range[0] as ipaddr.IPv4), range[1]);
      else this.v6.push(range);
    }
  }

  contains(ip: string): boolean {
    let v4 = dottedQuad(ip);
    if (v4 < 0) {
      const address = parsed(ip);
      if (address === null) return false;
      if (address.kind() === 'ipv6') {
        for (const range of this.v6) if (address.match(range)) return true;
        return false;
      }
      v4 = ipv4Number(address as ipaddr.IPv4);
    }
    const ranges = this.v4;
    for (let i = 0; i < ranges.length; i += 2) {
      const prefix = ranges[i + 1]!;
      // The bits that differ, shifted past the host part (`>>> 32` would shift by 0: prefix 0 matches all).
      if (prefix === 0 || ((v4 ^ ranges[i]!) >>> (32 - prefix)) === 0) return true;
    }
    return false;
  }

  toString(): string {
    return this.texts.join(', ');
  }
}
