import type { CommandContext } from './context.js';
import type { SocksAddress } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import type { CommandName } from '../policy/request.js';

/** What a command may go on with: for a domain checked address by address, those addresses. */
export interface Admission {
  readonly addresses?: string[];
}

/**
 * Asks the gate whether the session may run `command` to `destination` (src/policy/gate.ts decides).
 * For a name checked address by address the command then uses exactly those addresses, so a second
 * lookup cannot swap in another. Denials get reply 0x02 and a log line naming the rule. Returns null
 * when refused (the session is closing).
 */
export async function admit(session: CommandContext, command: CommandName, destination: SocksAddress): Promise<Admission | null> {
  const verdict = await session.ctx.gate.destination(session.client.host, session.user, command, destination.host, destination.port);
  if (session.isClosed) return null;
  if (verdict.allowed === true) return verdict.addresses === undefined ? {} : { addresses: verdict.addresses };
  if (verdict.allowed === null) {
    session.fail(Reply.HOST_UNREACHABLE, verdict.error);
    return null;
  }
  session.ctx.stats.denied++;
  session.log.info({ command: session.command, target: session.target, address: verdict.address, rule: verdict.reason }, 'denied by policy');
  session.fail(Reply.NOT_ALLOWED, `denied: ${verdict.reason}`);
  return null;
}
