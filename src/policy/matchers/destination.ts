import { isIP } from 'node:net';
import { CidrSet } from '../cidr.js';
import type { Match, Matcher, PolicyRequest } from '../request.js';

/**
 * The destination is in one of the ranges, or is one of the names: "example.org" exactly,
 * ".example.org" or "*.example.org" for every name under it. A name matches by its text; a range
 * matches the address being checked (the IP requested, or each address a name resolved to), so a
 * name cannot smuggle in an address that a range forbids.
 */
export class DestinationMatcher implements Matcher {
  private readonly ranges: CidrSet | null;
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];

  constructor(private readonly entries: readonly string[]) {
    const cidrs: string[] = [];
    for (const entry of entries) {
      const text = entry.trim().toLowerCase();
      if (isIP(text) || text.includes('/')) cidrs.push(text);
      else if (text.startsWith('*.')) this.suffixes.push(text.slice(1).replace(/\.$/, ''));
      else if (text.startsWith('.')) this.suffixes.push(text.replace(/\.$/, ''));
      else this.exact.add(text.replace(/\.$/, ''));
    }
    this.ranges = cidrs.length > 0 ? new CidrSet(cidrs) : null;
  }

  match(request: PolicyRequest): Match {
    if (!isIP(request.host)) {
      const name = request.host.toLowerCase().replace(/\.$/, '');
      if (this.exact.has(name)) return 'yes';
      for (const suffix of this.suffixes) if (name.endsWith(suffix)) return 'yes';
    }
    if (this.ranges === null) return 'no';
    if (request.ip === null) return 'unknown';
    return this.ranges.contains(request.ip) ? 'yes' : 'no';
  }

  toString(): string {
    return `to ${this.entries.join(', ')}`;
  }
}
