import { ClientMatcher } from './matchers/client.js';
import { CommandMatcher } from './matchers/command.js';
import { DestinationMatcher } from './matchers/destination.js';
import { PortMatcher } from './matchers/port.js';
import { UserMatcher } from './matchers/user.js';
import type { CommandName, Match, Matcher, PolicyRequest } from './request.js';

/** A rule as the config writes it; every condition given must hold. */
export interface RuleConfig {
  readonly action: 'allow' | 'deny';
  readonly name?: string | undefined;
  readonly clients?: readonly string[] | undefined;
  readonly users?: readonly string[] | undefined;
  readonly groups?: readonly string[] | undefined;
  readonly commands?: readonly CommandName[] | undefined;
  readonly destinations?: readonly string[] | undefined;
  readonly ports?: ReadonlyArray<string | number> | undefined;
}

export class Rule {
  private readonly matchers: Matcher[] = [];
  /** The conditions on who asks and for what command (not where to). */
  private readonly who: Matcher[] = [];
  /** Whether the rule names destinations: only such a rule can allow a destination the safe defaults deny. */
  readonly namesDestinations: boolean;

  constructor(
    readonly config: RuleConfig,
    private readonly index: number,
    groups: Readonly<Record<string, readonly string[]>>,
  ) {
    if (config.clients?.length) this.who.push(new ClientMatcher(config.clients));
    if (config.users?.length || config.groups?.length) this.who.push(new UserMatcher(config.users ?? [], config.groups ?? [], groups));
    if (config.commands?.length) this.who.push(new CommandMatcher(config.commands));
    this.matchers.push(...this.who);
    if (config.destinations?.length) this.matchers.push(new DestinationMatcher(config.destinations));
    if (config.ports?.length) this.matchers.push(new PortMatcher(config.ports));
    this.namesDestinations = Boolean(config.destinations?.length);
    this.hasWhere = this.matchers.length > this.who.length;
  }

  /** Whether the rule has destination or port conditions. */
  readonly hasWhere: boolean;

  /** Whether the conditions on client, user and command hold (destination and port not considered). */
  matchesWho(request: PolicyRequest): boolean {
    return this.who.every((m) => m.match(request) === 'yes');
  }

  get action(): 'allow' | 'deny' {
    return this.config.action;
  }

  /** 'yes' when every condition holds, 'no' when one fails, 'unknown' when only the resolved address can tell. */
  match(request: PolicyRequest): Match {
    let unknown = false;
    for (const matcher of this.matchers) {
      const m = matcher.match(request);
      if (m === 'no') return 'no';
      if (m === 'unknown') unknown = true;
    }
    return unknown ? 'unknown' : 'yes';
  }

  /** `rule 2 "no-ads": deny to .ads.example` — for the log line of a decision. */
  toString(): string {
    const label = `rule ${this.index + 1}${this.config.name ? ` "${this.config.name}"` : ''}`;
    const conditions = this.matchers.length > 0 ? ` ${this.matchers.join(', ')}` : ' everything';
    return `${label}: ${this.config.action}${conditions}`;
  }
}
