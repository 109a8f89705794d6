import type { CommandContext } from './context.js';
import { isIP } from 'node:net';
import type { SocksAddress } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import type { Decision } from '../policy/policy.js';
import type { CommandName, PolicyRequest } from '../policy/request.js';
import { unmapAddress } from '../udp/socket.js';

/** What a command may go on with: for a domain checked address by address, those addresses. */
export interface Admission {
  readonly addresses?: string[];
}

/**
 * Asks policy whether the session may run `command` to `destination`. A domain destination is
 * checked by name and, when that cannot decide, by every address it resolves to; the command then
 * uses exactly those addresses, so a second lookup cannot swap in another. Denials get reply 0x02
 * and a log line naming the rule. Returns null when denied (the session is closing).
 */
export async function admit(session: CommandContext, command: CommandName, destination: SocksAddress): Promise<Admission | null> {
  const policy = session.ctx.live.policy;
  const request: PolicyRequest = {
    client: unmapAddress(session.client.host),
    user: session.user,
    command,
    host: destination.host,
    port: destination.port,
    ip: destination.type === 'domain' ? null : destination.host,
  };
  const first = policy.decide(request);
  if (first) return first.allowed ? {} : deny(session, first);
  let addresses: string[];
  try {
    addresses = (await session.ctx.resolver.resolve(destination.host)).filter((a) => isIP(a) !== 0);
  } catch (error) {
    if (!session.isClosed) session.fail(Reply.HOST_UNREACHABLE, `${(error as Error).message}`);
    return null;
  }
  if (session.isClosed) return null;
  for (const ip of addresses) {
    const decision = policy.decide({ ...request, ip }) ?? { allowed: false, reason: 'undecidable' };
    if (!decision.allowed) return deny(session, decision, ip);
  }
  return { addresses };
}

function deny(session: CommandContext, decision: Decision, ip?: string): null {
  session.ctx.stats.denied++;
  session.log.info({ command: session.command, target: session.target, address: ip, rule: decision.reason }, 'denied by policy');
  session.fail(Reply.NOT_ALLOWED, `denied: ${decision.reason}`);
  return null;
}
