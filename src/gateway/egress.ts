import { associate, type UdpAssociation } from 'socksgate-client';
import type { SocksAddress } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import type { Egress, EgressFactory } from '../server/associate.js';
import type { CommandContext } from '../server/context.js';
import { unmapAddress } from '../udp/socket.js';
import { Lease, type UpstreamPool } from './pool.js';

export interface GatewayUdpOptions {
  /** udp: a standard UDP ASSOCIATE to the upstream; tcp: UDP over TCP (command 0x05, socksgate upstreams). */
  readonly transport: 'udp' | 'tcp';
  /** Time to set up the upstream association. */
  readonly timeoutMs: number;
}

// Datagrams held while the upstream association is being set up.
const MAX_WAITING = 64;
// Policy decisions remembered per association (oldest forgotten first).
const MAX_DECISIONS = 4096;
// Datagrams that may wait for DNS answers a rule needs.
const MAX_WAITING_FOR_DNS = 64;

const ignore = (): void => {};

/**
 * UDP in gateway mode: the client's association stays on the gateway (its relay socket, limits and
 * counters); what it sends goes through one association the gateway opens to the client's upstream,
 * and what comes back is delivered to the client. When the upstream association ends (the upstream
 * closed it, or the upstream was taken out) the client's session is closed, which ends its association.
 */
export function gatewayEgress(pool: UpstreamPool, options: GatewayUdpOptions): EgressFactory {
  return (deliver, log, session): Egress => {
    const ranked = pool.rank(unmapAddress(session.client.host));
    if (ranked.length === 0) throw pool.noUpstream();
    const gate = new UdpGate(session);
    let upstream: UdpAssociation | null = null;
    let lease: Lease | null = null;
    let waiting: Array<[SocksAddress, Buffer]> | null = [];
    let closed = false;

    const end = (reason: string): void => {
      if (!closed) session.close(reason);
    };
    const send = (destination: SocksAddress, payload: Buffer): void => {
      if (upstream) upstream.send(payload, destination.host, destination.port).catch(ignore);
      else if (waiting && waiting.length < MAX_WAITING) waiting.push([destination, Buffer.from(payload)]);
    };

    // Each upstream in rank order until one accepts the association; a refusal ends the session.
    void (async () => {
      for (const candidate of ranked) {
        if (closed) return;
        lease = new Lease(candidate, end);
        try {
          const association = await associate({ proxy: candidate.proxy, transport: options.transport, timeoutMs: options.timeoutMs, signal: session.signal });
          if (closed) return association.close();
          upstream = association;
          association.on('message', ({ payload, from }) => deliver(from, payload));
          association.once('close', (error) => end(`upstream ${candidate.name} ended the association${error ? `: ${error.message}` : ''}`));
          log.debug({ upstream: candidate.name, transport: association.transport }, 'gateway: upstream association open');
          const queued = waiting ?? [];
          waiting = null;
          for (const [destination, payload] of queued) send(destination, payload);
          return;
        } catch (error) {
          lease.release();
          lease = null;
          if (closed) return;
          if (error instanceof SocksError && error.code === 'ERR_SOCKS_REPLY') {
            log.warn({ upstream: candidate.name, err: error.message }, 'gateway: the upstream refused the association');
            return end(`udp: upstream ${candidate.name} refused the association`);
          }
          pool.dialFailed(candidate, error as Error);
        }
      }
      end('udp: no upstream could set up the association');
    })();

    return {
      send(destination, payload) {
        if (closed) return;
        const allowed = gate.check(destination, () => send(destination, Buffer.from(payload)));
        if (allowed) send(destination, payload);
      },
      close() {
        if (closed) return;
        closed = true;
        waiting = null;
        gate.close();
        lease?.release();
        upstream?.close();
      },
    };
  };
}

/**
 * The gateway's rules for each datagram destination (the association hands egress datagrams on
 * unchecked). Decided by name text and address literal; a name only a resolved address can decide
 * (a rule with CIDR destinations) is resolved here, as for CONNECT, while the name itself still
 * goes to the upstream. Decisions are kept per destination while the same policy is in force.
 */
class UdpGate {
  private readonly decisions = new Map<string, boolean>();
  private decidedBy: unknown = null;
  private waitingForDns = 0;
  private closed = false;

  constructor(private readonly session: CommandContext) {}

  /** True to send now; false when denied, or when `later` will run once DNS has answered and allowed it. */
  check(destination: SocksAddress, later: () => void): boolean {
    const policy = this.session.ctx.live.policy;
    if (this.decidedBy !== policy) {
      this.decisions.clear();
      this.decidedBy = policy;
    }
    const key = `${destination.host}|${destination.port}`;
    const known = this.decisions.get(key);
    if (known !== undefined) return known || this.deny();
    const request = {
      client: unmapAddress(this.session.client.host),
      user: this.session.user,
      command: 'udp' as const,
      host: destination.host,
      port: destination.port,
      ip: destination.type === 'domain' ? null : destination.host,
    };
    const decision = policy.decide(request);
    if (decision) return this.remember(key, decision.allowed, destination, decision.reason);
    if (this.waitingForDns >= MAX_WAITING_FOR_DNS) return this.drop('dns');
    this.waitingForDns++;
    this.session.ctx.resolver.resolve(destination.host).then(
      (addresses) => {
        this.waitingForDns--;
        if (this.closed) return;
        const ip = addresses[0];
        const byAddress = ip === undefined ? null : policy.decide({ ...request, ip });
        if (this.remember(key, byAddress?.allowed ?? false, destination, byAddress?.reason ?? 'undecidable', ip)) later();
      },
      () => {
        this.waitingForDns--;
        if (!this.closed) this.drop('dns');
      },
    );
    return false;
  }

  close(): void {
    this.closed = true;
    this.decisions.clear();
  }

  private remember(key: string, allowed: boolean, destination: SocksAddress, reason: string, ip?: string): boolean {
    if (this.decisions.size >= MAX_DECISIONS) this.decisions.delete(this.decisions.keys().next().value as string);
    this.decisions.set(key, allowed);
    if (allowed) return true;
    this.session.log.info({ command: 'udp', target: `${destination.host}:${destination.port}`, address: ip, rule: reason }, 'denied by policy');
    return this.deny();
  }

  private deny(): false {
    return this.drop('denied');
  }

  private drop(reason: 'denied' | 'dns'): false {
    this.session.ctx.udp.stats.drops[reason]++;
    return false;
  }
}
