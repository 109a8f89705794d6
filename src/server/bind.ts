import { createServer, type Server, type Socket } from 'node:net';
import type { CommandContext } from './context.js';
import { pipeSession } from './connect.js';
import { replyForError } from './dialer.js';
import { admit } from './gate.js';
import { addressFromHost, formatAddress, type SocksAddress } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';

/**
 * RFC 1928 §4 BIND: listen on the address the client reached us on, reply with it, wait for one
 * connection from the expected host (DST.ADDR; any host when DST.ADDR is 0.0.0.0 or ::), send a
 * second reply naming that host, then relay.
 */
export async function runBind(session: CommandContext, destination: SocksAddress): Promise<void> {
  const admission = await admit(session, 'bind', destination);
  if (!admission || session.isClosed) return;
  let expected: Set<string> | null;
  try {
    expected = admission.addresses ? new Set(admission.addresses.map((a) => addressFromHost(a, 0).host)) : await expectedHosts(session, destination);
  } catch (error) {
    if (!session.isClosed) session.fail(replyForError(error), `bind: ${(error as Error).message}`);
    return;
  }
  if (session.isClosed) return;

  const local = addressFromHost(session.socket.localAddress ?? '0.0.0.0', 0);
  const listener = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  session.own(() => listener.close());
  try {
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen({ host: local.host, port: 0, exclusive: true }, () => {
        listener.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    session.fail(Reply.GENERAL_FAILURE, `bind: cannot listen on ${local.host}: ${(error as NodeJS.ErrnoException).code}`);
    return;
  }
  listener.on('error', (error: NodeJS.ErrnoException) => session.fail(Reply.GENERAL_FAILURE, `bind: listener failed: ${error.code ?? error.message}`));
  const port = (listener.address() as { port: number }).port;
  session.reply(Reply.SUCCEEDED, { ...local, port });

  const stopWatching = closeWhenClientLeaves(session);
  const peer = await acceptFrom(listener, expected, session);
  stopWatching();
  listener.close();
  if (!peer) {
    if (!session.isClosed) {
      session.ctx.stats.timeouts.bind++;
      session.fail(Reply.HOST_UNREACHABLE, `bind: no connection from ${destination.host} within ${session.ctx.bindTimeoutMs} ms`);
    }
    return;
  }
  session.own(() => peer.destroy());
  if (session.isClosed) return;
  const from = addressFromHost(peer.remoteAddress ?? '0.0.0.0', peer.remotePort ?? 0);
  session.target = `${formatAddress(destination)} <- ${formatAddress(from)}`;
  session.reply(Reply.SUCCEEDED, from);
  peer.resume();
  await pipeSession(session, peer);
}

/**
 * While a BIND waits for its incoming connection, the client closing its side (FIN or reset) ends the
 * session at once: nobody is left to relay to, and the listener should not wait for bindTimeout. The
 * session reads the client meanwhile (early data is kept for the relay), so its FIN shows here.
 * Returns the function that stops watching (once the wait is over).
 */
export function closeWhenClientLeaves(session: CommandContext): () => void {
  const client = session.socket;
  const gone = (): void => session.close('client closed while waiting for the incoming connection');
  const stop = (): void => {
    client.off('end', gone);
    client.off('close', gone);
  };
  if (client.readableEnded || client.destroyed) {
    gone();
    return stop;
  }
  client.once('end', gone);
  client.once('close', gone);
  return stop;
}

async function expectedHosts(session: CommandContext, destination: SocksAddress): Promise<Set<string> | null> {
  if (destination.type === 'domain') {
    const addresses = await session.ctx.resolver.resolve(destination.host);
    return new Set(addresses.map((a) => addressFromHost(a, 0).host));
  }
  const host = addressFromHost(destination.host, 0).host;
  return host === '0.0.0.0' || host === '::' ? null : new Set([host]);
}

/** The first connection from an expected host; others are closed. Null on timeout or session end. */
function acceptFrom(listener: Server, expected: Set<string> | null, session: CommandContext): Promise<Socket | null> {
  return new Promise((resolve) => {
    const done = (socket: Socket | null): void => {
      clearTimeout(timer);
      listener.off('connection', onConnection);
      session.signal.removeEventListener('abort', onAbort);
      resolve(socket);
    };
    const onConnection = (socket: Socket): void => {
      const from = addressFromHost(socket.remoteAddress ?? '', 0).host;
      if (expected && !expected.has(from)) {
        session.log.debug({ from }, 'bind: connection from an unexpected host closed');
        socket.destroy();
        return;
      }
      done(socket);
    };
    const onAbort = (): void => done(null);
    const timer = setTimeout(() => done(null), session.ctx.bindTimeoutMs);
    listener.on('connection', onConnection);
    session.signal.addEventListener('abort', onAbort, { once: true });
    if (session.signal.aborted) done(null);
  });
}
