import ipaddr from 'ipaddr.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseCidr(text: string): Range {
  if (text.includes('/')) return ipaddr.parseCIDR(text);
  const address = ipaddr.parse(text);
  return [address, address.kind() === 'ipv4' ? 32 : 128];
}

/** A set of address ranges, IPv4 and IPv6; IPv4-mapped IPv6 addresses match their IPv4 ranges. */
export class CidrSet {
  private readonly ranges: Range[];

  constructor(readonly texts: readonly string[]) {
    this.ranges = texts.map(parseCidr);
  }

  contains(ip: string): boolean {
    let address: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      address = ipaddr.process(ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip);
    } catch {
      return false;
    }
    for (const range of this.ranges) {
      if (range[0].kind() === address.kind() && address.match(range)) return true;
    }
    return false;
  }

  toString(): string {
    return this.texts.join(', ');
  }
}
