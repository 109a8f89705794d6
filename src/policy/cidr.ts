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

/** A set of address ranges, IPv4 and IPv6; IPv4-mapped IPv6 addresses match their IPv4 ranges. */
export class CidrSet {
  private readonly ranges: Range[];

  constructor(readonly texts: readonly string[]) {
    this.ranges = texts.map(parseCidr);
  }

  contains(ip: string): boolean {
    const address = parsed(ip);
    if (address === null) return false;
    for (const range of this.ranges) {
      if (range[0].kind() === address.kind() && address.match(range)) return true;
    }
    return false;
  }

  toString(): string {
    return this.texts.join(', ');
  }
}
