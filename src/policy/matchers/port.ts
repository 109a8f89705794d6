import type { Match, Matcher, PolicyRequest } from '../request.js';

/** The destination port is in one of the ranges ("443", "1000-2000"; validated by the config). */
export class PortMatcher implements Matcher {
  private readonly ranges: Array<[number, number]>;

  constructor(private readonly specs: ReadonlyArray<string | number>) {
    this.ranges = specs.map((spec) => {
      const [low, high] = String(spec).trim().split('-').map(Number);
      return [low!, high ?? low!];
    });
  }

  match(request: PolicyRequest): Match {
    for (const [low, high] of this.ranges) if (request.port >= low && request.port <= high) return 'yes';
    return 'no';
  }

  toString(): string {
    return `port ${this.specs.join(',')}`;
  }
}
