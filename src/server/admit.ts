import type { CommandContext } from './context.js';
import type { SocksAddress } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import type { CommandName } from '../policy/request.js';
import type { DestinationVerdict } from '../policy/gate.js';
import { describeRefusal } from '../policy/quota.js';

/** What a command may go on with: for a domain checked address by address, those addresses. */
export interface Admission {
  readonly addresses?: string[];
}

// Shared by every admission without addresses (most): no object each.
const ADMITTED: Admission = Object.freeze({});

/**
 * Asks the gate whether the session may run `command` to `destination` (src/policy/gate.ts decides).
 * For a name checked address by address the command then uses exactly those addresses, so a second
 * lookup cannot swap in another. Denials get reply 0x02 and a log line naming the rule. Returns null
 * when refused (the session is closing). The answer comes at once when nothing has to be waited for
 * (no quota for the user, a destination the rules decide without DNS), else as a promise.
 */
export function admit(session: CommandContext, command: CommandName, destination: SocksAddress): Admission | null | Promise<Admission | null> {
  if (session.ctx.gate.quotaOf(session.user) !== null) {
    return admitQuota(session).then((allowed) => (allowed ? admitDestination(session, command, destination) : null));
  }
  if (session.isClosed) return null;
  return admitDestination(session, command, destination);
}

function admitDestination(session: CommandContext, command: CommandName, destination: SocksAddress): Admission | null | Promise<Admission | null> {
  const verdict = session.ctx.gate.destination(session.client.host, session.user, command, destination.host, destination.port);
  return verdict instanceof Promise ? verdict.then((v) => admitted(session, v)) : admitted(session, verdict);
}

function admitted(session: CommandContext, verdict: DestinationVerdict): Admission | null {
  if (session.isClosed) return null;
  if (verdict.allowed === true) return verdict.addresses === undefined ? ADMITTED : { addresses: verdict.addresses };
  if (verdict.allowed === null) {
    session.fail(Reply.HOST_UNREACHABLE, verdict.error);
    return null;
  }
  session.ctx.stats.denied++;
  session.log.info({ command: session.command, target: session.target, address: verdict.address, rule: verdict.reason }, 'denied by policy');
  session.fail(Reply.NOT_ALLOWED, `denied: ${verdict.reason}`);
  return null;
}

/**
 * Whether the session's user may start a session under its traffic quotas; when not, reply 0x02 and
 * one log line naming the quota (user, which quota, its period and the period's start).
 */
export async function admitQuota(session: CommandContext): Promise<boolean> {
  const refusal = await session.ctx.gate.quotaAllows(session.user);
  if (refusal === null) return !session.isClosed;
  if (session.isClosed) return false;
  // Counted by the gate (socksgate_quota_refusals_total), not as a rule's denial.
  if (refusal === 'store-down') {
    session.log.info({ command: session.command, user: session.user }, 'quota not checked: the limit store cannot answer (limits.storeDown: refuse)');
    session.fail(Reply.NOT_ALLOWED, 'quota not checked: the limit store cannot answer');
    return false;
  }
  const { user, quota, limit, period, periodStart } = refusal;
  session.log.info({ command: session.command, user, quota, limit, period, periodStart }, 'quota exhausted');
  session.fail(Reply.NOT_ALLOWED, describeRefusal(refusal));
  return false;
}
