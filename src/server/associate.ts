import { isIP } from 'node:net';
import type { CommandContext, Egress } from './context.js';
import { addressFromHost, type SocksAddress } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import { Association, type AssociationSettings } from '../udp/association.js';
import { takeDatagramFromAll, type RateBuckets } from '../policy/limits.js';
import { unmapAddress } from '../udp/socket.js';
import { admitQuota } from './admit.js';

export type { Egress, EgressFactory, UdpContext } from './context.js';

/**
 * The client's UDP port when the request declares it: DST.PORT set and DST.ADDR either the
 * control connection's peer or unspecified (as PySocks sends). Any other address (a client behind
 * NAT naming its private address) or port 0: the first datagram from the peer's IP fixes the port.
 */
export function declaredPort(destination: SocksAddress, clientIp: string): number | null {
  if (destination.port === 0) return null;
  // PySocks writes the unspecified address as the name "0" (what inet_aton reads as 0.0.0.0).
  if (destination.type === 'domain') return destination.host === '0' ? destination.port : null;
  const host = addressFromHost(destination.host, 0).host;
  if (host === '0.0.0.0' || host === '::') return destination.port;
  return host === addressFromHost(clientIp, 0).host ? destination.port : null;
}

/**
 * RFC 1928 §7 UDP ASSOCIATE: set up the relay, reply with where to send datagrams (BND.ADDR is
 * the address the client reached, or udp.advertise; never a wildcard), then keep the association
 * exactly as long as the control connection.
 */
export async function runAssociate(session: CommandContext, destination: SocksAddress): Promise<void> {
  const udp = session.ctx.udp;
  const clientAddress = session.peerAddress;
  const localHost = unmapAddress(session.localAddress());
  if (isIP(clientAddress) === 0 || isIP(localHost) === 0) {
    session.fail(Reply.GENERAL_FAILURE, 'udp: control connection has no addresses');
    return;
  }
  if (!(await admitQuota(session))) return;
  const association = openAssociation(session, clientAddress, {
    shared: udp.demux !== null,
    declaredPort: declaredPort(destination, unmapAddress(clientAddress)),
  });
  if (!association) return;
  try {
    if (!(await association.open())) return;
  } catch (error) {
    if (!session.isClosed) session.fail(Reply.GENERAL_FAILURE, `udp: cannot open a relay socket: ${(error as NodeJS.ErrnoException).code}`);
    return;
  }
  if (session.isClosed) return;
  // Fixed-port mode: registered only once the association can relay, since clients know the port in advance.
  let port = association.relayPort;
  if (udp.demux) {
    await udp.demux.whenBound();
    if (session.isClosed) return;
    const registered = udp.demux.register(association, localHost);
    if (typeof registered === 'string') {
      session.fail(Reply.GENERAL_FAILURE, `udp: ${registered}`);
      return;
    }
    association.attach(registered.channel);
    port = registered.port;
    try {
      await registered.claimed;
    } catch (error) {
      if (!session.isClosed) session.fail(Reply.GENERAL_FAILURE, `udp: ${(error as Error).message}`);
      return;
    }
    if (session.isClosed) return;
  }

  // The association itself: its up/down and describe() (no closures per session).
  session.meter = association;
  session.details = association;
  session.holdControl();
  if (udp.keepaliveMs > 0) session.setKeepAlive(udp.keepaliveMs);
  session.reply(Reply.SUCCEEDED, addressFromHost(udp.advertise ?? localHost, port), () => session.handOverControl());
}

/**
 * The association for a UDP ASSOCIATE or UDP-over-TCP session, once policy allows this client UDP
 * at all (otherwise 0x02 is sent and null returned). The session owns it from here.
 */
export function openAssociation(session: CommandContext, clientAddress: string, how: { shared: boolean; declaredPort: number | null }): Association | null {
  const decision = session.ctx.gate.associate(clientAddress, session.user);
  if (!decision.allowed) {
    session.ctx.stats.denied++;
    session.log.info({ command: session.command, rule: decision.reason }, 'denied by policy');
    session.fail(Reply.NOT_ALLOWED, `denied: ${decision.reason}`);
    return null;
  }
  // Closures are made in small helpers so that each holds only what it uses, and an association
  // without egress or rate limits holds none of those.
  const upstream = makeEgress(session);
  if (upstream === undefined) return null;
  const egress = upstream?.egress;
  if (egress) session.own(egress);
  const association = new Association(associationSettings(session), {
    ...(egress ? { egress: (destination: SocksAddress, payload: Buffer) => egress.send(destination, payload) } : {}),
    user: session.user,
    meter: datagramMeter(session.rates),
    clientAddress,
    shared: how.shared,
    declaredPort: how.declaredPort,
    owner: session,
  });
  if (upstream) upstream.back.to = association;
  session.own(association);
  return association;
}

// One settings object per server, shared by its associations.
const settingsOf = new WeakMap<object, AssociationSettings>();

/** The server-wide part of an association's settings. */
function associationSettings(session: CommandContext): AssociationSettings {
  const udp = session.ctx.udp;
  let settings = settingsOf.get(udp);
  if (settings === undefined) {
    settings = {
      endpointIndependent: udp.endpointIndependent,
      reassemble: udp.reassemble,
      fragmentTimeoutMs: udp.fragmentTimeoutMs,
      reassemblyLimit: udp.reassemblyLimit,
      budget: udp.budget,
      maxPayload: udp.maxPayload,
      idleTimeoutMs: udp.idleTimeoutMs,
      gate: session.ctx.gate,
      stats: udp.stats,
      relay: udp.relay,
    };
    settingsOf.set(udp, settings);
  }
  return settings;
}

/** Takes a datagram from the session's UDP rate buckets; null when none limits UDP. */
function datagramMeter(all: readonly RateBuckets[]): ((bytes: number) => boolean) | null {
  const rates = all.filter((r) => r.udpPackets.rate > 0 || r.udpBytes.rate > 0);
  return rates.length === 0 ? null : (bytes) => takeDatagramFromAll(rates, bytes);
}

/**
 * The session's egress, and where what it brings back goes (set once the association exists); null:
 * datagrams leave from the relay socket; undefined when the factory refused (reply sent).
 */
function makeEgress(session: CommandContext): { egress: Egress; back: { to: Association | null } } | null | undefined {
  const factory = session.ctx.udp.egress;
  if (!factory) return null;
  const back: { to: Association | null } = { to: null };
  try {
    return { egress: factory((source, payload) => back.to?.fromUpstream(source, payload), session.log, session), back };
  } catch (error) {
    const reply = error instanceof SocksError && error.reply !== null ? error.reply : Reply.GENERAL_FAILURE;
    session.fail(reply, `udp: ${(error as Error).message}`);
    return undefined;
  }
}
