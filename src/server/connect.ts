import type { Socket } from 'node:net';
import type { CommandContext } from './context.js';
import { replyForError } from './dialer.js';
import { admit } from './admit.js';
import { NativeTunnel } from '../native/tcp.js';
import type { NativeConn } from '../native/tcp.js';
import { relay } from './relay.js';
import { Throttle } from './throttle.js';
import { addressFromHost, type SocksAddress } from 'socksgate-client/protocol';
import { describeReply, Reply } from 'socksgate-client/protocol';
import { unmapAddress } from '../udp/socket.js';

/**
 * RFC 1928 §4 CONNECT: dial the destination (every resolved address, IPv4 and IPv6), reply with the
 * outbound socket's local address, then relay both ways until both sides are done. A client
 * connection the native helper holds, dialed directly and not throttled, stays on the helper from
 * end to end; everything else goes through net.Sockets.
 */
export async function runConnect(session: CommandContext, destination: SocksAddress): Promise<void> {
  const admitting = admit(session, 'connect', destination);
  // Most are decided at once: no wait then.
  const admission = admitting instanceof Promise ? await admitting : admitting;
  if (!admission || session.isClosed) return;
  const dialer = session.ctx.dialer;
  const dialNative = session.nativeClient !== null && !session.rates.some((r) => r.tcpBytes.rate > 0) ? dialer.dialNative : undefined;
  let target: Socket | NativeConn;
  try {
    target = dialNative
      ? await dialNative(destination, admission.addresses)
      : await dialer.dial(destination, session.signal, admission.addresses, { client: unmapAddress(session.client.host), user: session.user });
  } catch (error) {
    if (session.isClosed) return;
    const code = replyForError(error);
    session.fail(code, `${describeReply(code)}: ${(error as Error).message}`);
    return;
  }
  if (session.isClosed) {
    if ('destroy' in target) target.destroy();
    else target.close();
    return;
  }
  if ('destroy' in target) {
    const socket = target;
    session.own(() => socket.destroy());
    session.reply(Reply.SUCCEEDED, addressFromHost(unmapAddress(socket.localAddress ?? '0.0.0.0'), socket.localPort ?? 0));
    await pipeSession(session, socket);
    return;
  }
  const conn = target;
  session.own(conn);
  // The tunnel writes the reply as it starts: one call into the helper for both.
  const reply = session.replyBytes(Reply.SUCCEEDED, boundAddress(conn.localHost || '0.0.0.0', conn.localPort));
  await tunnelSession(session, conn, reply);
}

// The last local address a native connect reported, as a reply names it: every CONNECT leaving by
// the same address has the same (the text and its reading are looked at once, not per session).
let lastLocal = '';
let lastBound: SocksAddress = addressFromHost('0.0.0.0', 0);

/** BND.ADDR and BND.PORT (RFC 1928 §6) for an outbound connection's own address as the helper reports it. */
function boundAddress(localHost: string, port: number): SocksAddress {
  if (localHost !== lastLocal) {
    lastBound = addressFromHost(unmapAddress(localHost), 0);
    lastLocal = localHost;
  }
  return { host: lastBound.host, port, type: lastBound.type };
}

/** Relays the session's client and `target`, then closes the session with the relay's outcome. */
export async function pipeSession(session: CommandContext, target: Socket): Promise<void> {
  const client = session.socket;
  const downBase = client.bytesWritten;
  const { early, ended } = session.detach();
  session.meter = () => [target.bytesWritten, client.bytesWritten - downBase];
  const buckets = session.rates.filter((r) => r.tcpBytes.rate > 0).map((r) => r.tcpBytes);
  const idleMs = session.ctx.idleTimeoutMs;
  // Unthrottled tunnels go through the native helper where it is loaded (the throttles are streams).
  const tunnel = buckets.length === 0 ? NativeTunnel.start(client, target, { idleMs, early, clientEnded: ended }) : null;
  let end: string;
  if (tunnel) {
    session.meter = tunnel;
    session.details = tunnel;
    session.own(tunnel);
    end = await tunnel.done;
  } else {
    const throttles = buckets.length > 0 ? { up: new Throttle(buckets, 'up'), down: new Throttle(buckets, 'down') } : {};
    end = await relay(client, target, { idleMs, early, clientEnded: ended, ...throttles });
  }
  finish(session, end);
}

/** A tunnel between the session's client connection and `target`, both held by the native helper; `reply` goes first. */
async function tunnelSession(session: CommandContext, target: NativeConn, reply: Buffer | null): Promise<void> {
  const client = session.nativeClient!;
  const { early, ended } = session.detach();
  const tunnel = NativeTunnel.fromConns(client, target, { idleMs: session.ctx.idleTimeoutMs, early, clientEnded: ended, reply: reply ?? undefined });
  if (tunnel === null) return session.close('internal error: the native helper refused the tunnel');
  session.meter = tunnel;
  session.details = NATIVE_DETAILS;
  session.own(tunnel);
  finish(session, await tunnel.done);
}

function finish(session: CommandContext, end: string): void {
  if (end === 'idle') session.ctx.stats.timeouts.idle++;
  session.close(end === 'closed' ? 'ok' : end === 'idle' ? 'idle timeout' : end);
}

// What the status page shows of a CONNECT held by the helper from accept to close (one object for all).
const NATIVE_DETAILS = { describe: (): Record<string, unknown> => ({ relay: 'native', front: 'native' }) };
