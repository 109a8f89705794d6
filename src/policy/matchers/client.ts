import { CidrSet } from '../cidr.js';
import type { Match, Matcher, PolicyRequest } from '../request.js';

/** The client's address is in one of the ranges. */
export class ClientMatcher implements Matcher {
  private readonly set: CidrSet;

  constructor(ranges: readonly string[]) {
    this.set = new CidrSet(ranges);
  }

  match(request: PolicyRequest): Match {
    return this.set.contains(request.client) ? 'yes' : 'no';
  }

  toString(): string {
    return `from ${this.set}`;
  }
}
