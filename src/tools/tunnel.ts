import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { associate, type UdpAssociation } from 'socksgate-client';
import { connect } from 'socksgate-client';
import { parseProxy, type ProxyInput, type ProxyOptions } from 'socksgate-client';
import type { SocksAddress } from 'socksgate-client/protocol';
import type { Egress, EgressFactory } from '../server/associate.js';
import type { Dialer } from '../server/dialer.js';
import { SocksServer } from '../server/server.js';
import type { UserStore } from '../server/users.js';

export interface TunnelOptions {
  /** Where local applications reach the tunnel (a standard SOCKS5 server). */
  readonly listen: { readonly host: string; readonly port: number };
  /** The remote socksgate. */
  readonly server: ProxyInput;
  /** Carry UDP to the server in TCP frames (UDP over TCP) instead of UDP ASSOCIATE. */
  readonly udpOverTcp: boolean;
  /** With UDP over TCP: one connection per local association instead of one per flow (destination). */
  readonly shareConnection?: boolean;
  /** Users for the local listener (none: loopback only is sensible). */
  readonly users?: UserStore | null;
  readonly logger?: Logger;
}

// Flows (destinations) one local association may open upstream at once.
const MAX_FLOWS = 256;
// Datagrams held per flow while its upstream association is set up.
const MAX_WAITING = 64;

/** CONNECT passes through: the server dials, and resolves names. */
class UpstreamDialer implements Dialer {
  constructor(private readonly server: ProxyOptions) {}

  dial(destination: SocksAddress, signal: AbortSignal): Promise<Socket> {
    return connect({ proxy: this.server, host: destination.host, port: destination.port, signal });
  }
}

/**
 * The UDP of one local association, carried upstream. With UDP over TCP, each flow (destination)
 * gets its own TCP connection by default, so a loss on one flow does not stall the others.
 */
function upstreamEgress(server: ProxyOptions, udpOverTcp: boolean, share: boolean): EgressFactory {
  return (deliver, log): Egress => {
    const flows = new Map<string, { association: UdpAssociation | null; waiting: Array<[SocksAddress, Buffer]> }>();
    let closed = false;
    const open = (key: string): void => {
      const flow = { association: null as UdpAssociation | null, waiting: [] as Array<[SocksAddress, Buffer]> };
      flows.set(key, flow);
      associate({ proxy: server, transport: udpOverTcp ? 'tcp' : 'udp', reassociate: true }).then(
        (association) => {
          if (closed || flows.get(key) !== flow) return association.close();
          flow.association = association;
          association.on('message', ({ payload, from }) => deliver(from, payload));
          association.on('close', () => {
            if (flows.get(key) === flow) flows.delete(key);
          });
          for (const [destination, payload] of flow.waiting.splice(0)) void association.send(payload, destination.host, destination.port).catch(() => {});
        },
        (error: Error) => {
          log.warn({ err: error.message }, 'tunnel: the server refused an association');
          if (flows.get(key) === flow) flows.delete(key);
        },
      );
    };
    return {
      send(destination, payload) {
        if (closed) return;
        const key = udpOverTcp && !share ? `${destination.host}|${destination.port}` : 'all';
        let flow = flows.get(key);
        if (!flow) {
          if (flows.size >= MAX_FLOWS) return;
          open(key);
          flow = flows.get(key)!;
        }
        if (flow.association) void flow.association.send(payload, destination.host, destination.port).catch(() => {});
        else if (flow.waiting.length < MAX_WAITING) flow.waiting.push([destination, Buffer.from(payload)]);
      },
      close() {
        closed = true;
        for (const flow of flows.values()) flow.association?.close();
        flows.clear();
      },
    };
  };
}

/**
 * `socksgate tunnel`: a local, standard SOCKS5 server for unmodified applications. CONNECT passes
 * through to the remote server; UDP ASSOCIATE traffic is carried to it over TCP (or UDP ASSOCIATE).
 * The remote server applies its rules; this hop resolves no names and checks no destinations.
 */
export function createTunnel(options: TunnelOptions): SocksServer {
  const server = { ...parseProxy(options.server), remoteDns: true };
  return new SocksServer({
    listen: [options.listen],
    users: options.users ?? null,
    dialer: new UpstreamDialer(server),
    destinationChecks: false,
    udpEgress: upstreamEgress(server, options.udpOverTcp, options.shareConnection ?? false),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}
