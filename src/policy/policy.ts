import { CidrSet } from './cidr.js';
import { Rule, type RuleConfig } from './rule.js';
import type { PolicyRequest } from './request.js';

export interface PolicyConfig {
  readonly rules: readonly RuleConfig[];
  readonly defaultAction: 'allow' | 'deny';
  readonly groups: Readonly<Record<string, readonly string[]>>;
  /** Allow loopback destinations (local set-ups and test suites). */
  readonly allowLoopbackTargets: boolean;
  /** This machine's own addresses: denied as destinations unless a rule names them. */
  readonly ownAddresses: readonly string[];
  /**
   * False for a hop whose upstream proxy decides about destinations (socksgate tunnel): no safe
   * defaults here, and names are never resolved locally for policy.
   */
  readonly destinationChecks?: boolean;
}

export interface Decision {
  readonly allowed: boolean;
  /** The rule (or default) that decided, for the log line. */
  readonly reason: string;
}

const LOOPBACK = new CidrSet(['127.0.0.0/8', '::1/128']);
const LINK_LOCAL = new CidrSet(['169.254.0.0/16', 'fe80::/10']);
const UNSPECIFIED = new CidrSet(['0.0.0.0/8', '::/128']);

/**
 * The single gate. Rules are tried in order and the first that matches decides; without a match
 * the default action does. An allow that does not name the destination still leaves loopback,
 * link-local (169.254.169.254 among them), unspecified and this machine's own addresses denied.
 */
export class Policy {
  private readonly rules: Rule[];
  private readonly own: CidrSet;

  constructor(readonly config: PolicyConfig) {
    this.rules = config.rules.map((rule, i) => new Rule(rule, i, config.groups));
    this.own = new CidrSet(config.ownAddresses.filter((a) => !a.includes('%')));
  }

  /**
   * The decision for a request. For a domain destination checked before resolution (`ip` null)
   * this is null when it depends on the addresses: resolve, then ask again for each of them.
   */
  decide(request: PolicyRequest): Decision | null {
    for (const rule of this.rules) {
      const match = rule.match(request);
      if (match === 'no') continue;
      if (match === 'unknown') return null;
      if (rule.action === 'deny') return { allowed: false, reason: rule.toString() };
      return rule.namesDestinations ? { allowed: true, reason: rule.toString() } : this.safely(request, rule.toString());
    }
    if (this.config.defaultAction === 'deny') return { allowed: false, reason: 'default action: deny' };
    return this.safely(request, 'default action: allow');
  }

  /**
   * UDP ASSOCIATE itself, before any datagram: denied when a rule without destination conditions
   * denies this client/user, or when nothing could ever allow one of its datagrams.
   */
  decideAssociate(client: string, user: string | null): Decision {
    const request: PolicyRequest = { client, user, command: 'udp', host: '', port: 0, ip: null };
    for (const rule of this.rules) {
      if (!rule.matchesWho(request)) continue;
      if (!rule.hasWhere) return { allowed: rule.action === 'allow', reason: rule.toString() };
      if (rule.action === 'allow') return { allowed: true, reason: `${rule.toString()} (per datagram)` };
    }
    return this.config.defaultAction === 'allow'
      ? { allowed: true, reason: 'default action: allow' }
      : { allowed: false, reason: 'default action: deny (no rule allows udp for this client)' };
  }

  /** An allow that did not name the destination, unless the destination is one of the special ones. */
  private safely(request: PolicyRequest, reason: string): Decision | null {
    // BIND names who may connect in; the proxy reaches out to no one, so there is nothing to guard.
    if (request.command === 'bind' || this.config.destinationChecks === false) return { allowed: true, reason };
    const ip = request.ip;
    if (ip === null) return null;
    if (LOOPBACK.contains(ip)) {
      return this.config.allowLoopbackTargets
        ? { allowed: true, reason: `${reason} (loopback allowed by allowLoopbackTargets)` }
        : { allowed: false, reason: `safe default: ${ip} is a loopback address (allow with --allow-loopback-targets, or a rule naming it)` };
    }
    if (LINK_LOCAL.contains(ip)) return { allowed: false, reason: `safe default: ${ip} is link-local (cloud metadata lives there); a rule naming it can allow it` };
    if (UNSPECIFIED.contains(ip)) return { allowed: false, reason: `safe default: ${ip} is an unspecified address` };
    if (this.own.contains(ip)) return { allowed: false, reason: `safe default: ${ip} is this proxy's own address; a rule naming it can allow it` };
    return { allowed: true, reason };
  }
}
