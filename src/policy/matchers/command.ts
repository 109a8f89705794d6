import type { CommandName, Match, Matcher, PolicyRequest } from '../request.js';

/** The request's command is one of these. */
export class CommandMatcher implements Matcher {
  constructor(private readonly commands: readonly CommandName[]) {}

  match(request: PolicyRequest): Match {
    return this.commands.includes(request.command) ? 'yes' : 'no';
  }

  toString(): string {
    return `command ${this.commands.join('/')}`;
  }
}
