import { ControlConnection } from 'socksgate-client/control';
import { addressFromHost, formatAddress, type SocksAddress } from 'socksgate-client/protocol';
import { Command, describeReply, Reply } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import { pipeSession } from '../server/connect.js';
import { closeWhenClientLeaves } from '../server/bind.js';
import { admit } from '../server/gate.js';
import type { CommandContext, CommandRunner } from '../server/context.js';
import { unmapAddress } from '../udp/socket.js';
import { Lease, type UpstreamPool } from './pool.js';

/**
 * RFC 1928 §4 BIND in gateway mode: the upstream's BIND. The upstream listens; its first reply
 * (where the other side should connect) and its second (who connected) are passed to the client,
 * then the connection is relayed like a CONNECT.
 */
export function gatewayBind(pool: UpstreamPool, timeoutMs: number): CommandRunner {
  return async (session: CommandContext, destination: SocksAddress): Promise<void> => {
    const admission = await admit(session, 'bind', destination);
    if (!admission || session.isClosed) return;
    const ranked = pool.rank(unmapAddress(session.client.host));
    if (ranked.length === 0) return session.fail(Reply.GENERAL_FAILURE, pool.noUpstream().message);
    for (const upstream of ranked) {
      let control: ControlConnection;
      try {
        control = await ControlConnection.open(upstream.proxy, { timeoutMs, signal: session.signal });
      } catch (error) {
        if (session.isClosed) return;
        pool.dialFailed(upstream, error as Error);
        continue;
      }
      const lease = new Lease(upstream, (reason) => session.close(reason));
      session.own(() => {
        lease.release();
        control.destroy();
      });
      try {
        const first = await control.request(Command.BIND, destination);
        // An upstream answering the unspecified address means its own address.
        const unspecified = first.bound.host === '0.0.0.0' || first.bound.host === '::';
        const listening = unspecified ? addressFromHost(control.socket.remoteAddress ?? upstream.proxy.host, first.bound.port) : first.bound;
        session.target = `${formatAddress(destination)} via ${upstream.name}`;
        session.reply(Reply.SUCCEEDED, listening);
        const stopWatching = closeWhenClientLeaves(session);
        const second = await control.expectReply('BIND incoming connection', session.ctx.bindTimeoutMs).finally(stopWatching);
        if (session.isClosed) return;
        session.target = `${formatAddress(destination)} <- ${formatAddress(second.bound)} via ${upstream.name}`;
        session.reply(Reply.SUCCEEDED, second.bound);
      } catch (error) {
        if (session.isClosed) return;
        const code = error instanceof SocksError && error.reply !== null ? error.reply : Reply.HOST_UNREACHABLE;
        if (error instanceof SocksError && error.code === 'ERR_TIMEOUT') session.ctx.stats.timeouts.bind++;
        return session.fail(code, `bind via ${upstream.name}: ${describeReply(code)}: ${(error as Error).message}`);
      }
      const early = control.release();
      if (early.length > 0) control.socket.unshift(early);
      return pipeSession(session, control.socket);
    }
    session.fail(Reply.GENERAL_FAILURE, 'bind: no upstream could be reached');
  };
}
