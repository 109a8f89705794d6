import type { Match, Matcher, PolicyRequest } from '../request.js';

/** The authenticated user is one of the names, or a member of one of the groups. */
export class UserMatcher implements Matcher {
  private readonly names: Set<string>;

  constructor(
    private readonly users: readonly string[],
    private readonly groups: readonly string[],
    groupMembers: Readonly<Record<string, readonly string[]>>,
  ) {
    this.names = new Set([...users, ...groups.flatMap((g) => groupMembers[g] ?? [])]);
  }

  match(request: PolicyRequest): Match {
    return request.user !== null && this.names.has(request.user) ? 'yes' : 'no';
  }

  toString(): string {
    const parts = [...this.users.map((u) => `user ${u}`), ...this.groups.map((g) => `group ${g}`)];
    return parts.join(' or ');
  }
}
