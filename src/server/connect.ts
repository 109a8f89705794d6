import type { Socket } from 'node:net';
import type { Session } from './session.js';
import { replyForError } from './dialer.js';
import { admit } from './gate.js';
import { NativeTunnel } from './native-pipe.js';
import { relay } from './relay.js';
import { Throttle } from './throttle.js';
import { addressFromHost, type SocksAddress } from '../protocol/address.js';
import { describeReply, Reply } from '../protocol/constants.js';
import { unmapAddress } from '../udp/socket.js';

/**
 * RFC 1928 §4 CONNECT: dial the destination (every resolved address, IPv4 and IPv6), reply with the
 * outbound socket's local address, then relay both ways until both sides are done.
 */
export async function runConnect(session: Session, destination: SocksAddress): Promise<void> {
  const admission = await admit(session, 'connect', destination);
  if (!admission || session.isClosed) return;
  if (session.front !== null) {
    // A throttled tunnel needs the stream relay, so the session takes its socket back first.
    if (!session.rates.some((r) => r.tcpBytes.rate > 0)) return frontConnect(session, destination);
    if (!session.takeFromFront()) return;
  }
  let target: Socket;
  try {
    target = await session.ctx.dialer.dial(destination, session.signal, admission.addresses, { client: unmapAddress(session.client.host), user: session.user });
  } catch (error) {
    if (session.isClosed) return;
    const code = replyForError(error);
    session.fail(code, `${describeReply(code)}: ${(error as Error).message}`);
    return;
  }
  if (session.isClosed) {
    target.destroy();
    return;
  }
  session.own(() => target.destroy());
  session.reply(Reply.SUCCEEDED, addressFromHost(target.localAddress ?? '0.0.0.0', target.localPort ?? 0));
  await pipeSession(session, target);
}

/** Relays the session's client and `target`, then closes the session with the relay's outcome. */
export async function pipeSession(session: Session, target: Socket): Promise<void> {
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
    const throttles = buckets.length > 0 ? { up: new Throttle(buckets), down: new Throttle(buckets) } : {};
    end = await relay(client, target, { idleMs, early, clientEnded: ended, ...throttles });
  }
  if (end === 'idle') session.ctx.stats.timeouts.idle++;
  session.close(end === 'closed' ? 'ok' : end === 'idle' ? 'idle timeout' : end);
}

/**
 * CONNECT on the native front door: the helper connects and sends the success reply itself, and the
 * tunnel goes to the native relay straight from its descriptors. Same replies, results and counts as
 * the dialer path above.
 */
async function frontConnect(session: Session, destination: SocksAddress): Promise<void> {
  const front = session.front!;
  const idleMs = session.ctx.idleTimeoutMs;
  const outcome = await new Promise<NativeTunnel | string>((resolve) => {
    // A session closed meanwhile (server shutdown) aborts the connection: the helper then reports nothing.
    session.own(() => resolve('closed'));
    const immediate = front.connect(
      {
        // Synchronously: the tunnel takes the descriptors over (or the helper closes them).
        connected: (clientFd, targetFd) => {
          session.front = null;
          const tunnel = session.isClosed ? null : NativeTunnel.fromDescriptors(clientFd, targetFd, idleMs);
          resolve(tunnel ?? 'closed');
          return tunnel !== null;
        },
        connectFailed: (code) => resolve(code),
      },
      destination.host,
      destination.port,
      session.ctx.connectTimeoutMs,
    );
    if (immediate !== null) resolve(immediate);
  });
  if (typeof outcome === 'string') {
    if (session.isClosed) return;
    const code = replyForError({ code: outcome });
    session.fail(code, `${describeReply(code)}: cannot reach ${destination.host}:${destination.port}: ${outcome}`);
    return;
  }
  const tunnel = outcome;
  if (session.isClosed) {
    tunnel.close();
    return;
  }
  session.meter = tunnel;
  session.details = FRONT_DETAILS;
  session.own(tunnel);
  const end = await tunnel.done;
  if (end === 'idle') session.ctx.stats.timeouts.idle++;
  session.close(end === 'closed' ? 'ok' : end === 'idle' ? 'idle timeout' : end);
}

// What the status page shows of a front-door CONNECT (one object for all of them).
const FRONT_DETAILS = { describe: (): Record<string, unknown> => ({ relay: 'native', front: 'native' }) };
