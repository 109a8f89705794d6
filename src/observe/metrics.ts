import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SocksServer } from '../server/server.js';
import { DROP_REASONS } from '../udp/stats.js';
import { SessionDurations } from './session-durations.js';

/**
 * Prometheus metrics of one server. Counters the server keeps as plain integers are read at scrape
 * time (collect callbacks), so the hot path never touches prom-client (session durations too, see
 * session-durations.ts); only DNS lookups are observed as they happen. Label sets are bounded: no
 * per-client labels.
 */
export function createMetrics(server: SocksServer): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'socksgate_' });
  const udp = server.udpStats;
  const tcp = server.stats;
  const COMMANDS = ['connect', 'bind', 'udp', 'udp-over-tcp', '-'];

  const quotas = server.gate.quotas;
  new Counter({
    name: 'socksgate_quota_refusals_total',
    help: 'Sessions refused with 0x02 because a traffic quota of their user ran out (quotas.*).',
    registers: [registry],
    collect() {
      let sum = 0;
      for (const n of quotas.refusals.values()) sum += n;
      this.reset();
      this.inc(sum);
    },
  });
  // Per user only with metrics.perUser: one series per user can overload Prometheus.
  new Counter({
    name: 'socksgate_user_bytes_total',
    help: 'Bytes relayed for users with a traffic quota, by user and direction (up: client to destination); only with metrics.perUser.',
    labelNames: ['user', 'direction'],
    registers: [registry],
    collect() {
      this.reset();
      if (!quotas.config.metricsPerUser) return;
      for (const [user, [up, down]] of quotas.relayed()) {
        this.inc({ user, direction: 'up' }, up);
        this.inc({ user, direction: 'down' }, down);
      }
    },
  });
  new Counter({
    name: 'socksgate_user_quota_refusals_total',
    help: 'Sessions refused because a traffic quota ran out, by user; only with metrics.perUser.',
    labelNames: ['user'],
    registers: [registry],
    collect() {
      this.reset();
      if (!quotas.config.metricsPerUser) return;
      for (const [user, n] of quotas.refusals) this.inc({ user }, n);
    },
  });
  new Gauge({
    name: 'socksgate_limit_store_up',
    help: 'Whether the limit store (limits.store) shared with other workers or instances answers: 1; 0 while each process enforces its own limits, or when none is shared.',
    registers: [registry],
    collect() {
      const store = server.limitStore;
      if (store) this.set(store.up ? 1 : 0);
      else this.reset();
    },
  });
  new Counter({
    name: 'socksgate_limit_store_fallbacks_total',
    help: 'Sessions the limit store could not answer for, by outcome: admitted by the process\' own limits, or refused (limits.storeDown).',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      this.reset();
      const store = server.limitStore;
      if (store) {
        this.inc({ outcome: 'admitted' }, store.fallbacks);
        this.inc({ outcome: 'refused' }, store.refusals);
      }
    },
  });
  new Gauge({
    name: 'socksgate_sessions_active',
    help: 'Sessions open now, by command ("-" while in the handshake).',
    labelNames: ['command'],
    registers: [registry],
    collect() {
      const counts = server.sessionsByCommand();
      for (const command of COMMANDS) this.set({ command }, counts[command] ?? 0);
    },
  });
  new Counter({
    name: 'socksgate_tcp_connections_total',
    help: 'TCP control connections accepted.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(tcp.connectionsAccepted);
    },
  });
  new Counter({
    name: 'socksgate_sessions_total',
    help: 'Sessions ended, by command.',
    labelNames: ['command'],
    registers: [registry],
    collect() {
      this.reset();
      for (const command of COMMANDS) this.inc({ command }, tcp.sessionsEnded[command] ?? 0);
    },
  });
  new Counter({
    name: 'socksgate_session_timeouts_total',
    help: 'Sessions ended by a timeout, by kind.',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [kind, count] of Object.entries(tcp.timeouts)) this.inc({ kind }, count);
    },
  });
  new Counter({
    name: 'socksgate_auth_failures_total',
    help: 'Failed username/password logins.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(tcp.authFailures);
    },
  });
  new Counter({
    name: 'socksgate_auth_blocked_total',
    help: 'Connections closed because their address is blocked after failed logins.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(tcp.authBlocked);
    },
  });
  new Counter({
    name: 'socksgate_rule_denials_total',
    help: 'Requests denied by a rule or a safe default (UDP datagrams are in socksgate_udp_dropped_total{reason="denied"}).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(tcp.denied);
    },
  });
  new Counter({
    name: 'socksgate_session_limit_refusals_total',
    help: 'Requests refused over a per-client or per-user session limit.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(tcp.sessionsOverLimit);
    },
  });
  new Gauge({
    name: 'socksgate_udp_associations_active',
    help: 'UDP associations open now.',
    registers: [registry],
    collect() {
      this.set(udp.activeAssociations);
    },
  });
  new Counter({
    name: 'socksgate_udp_associations_total',
    help: 'UDP associations opened.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(udp.associationsOpened);
    },
  });
  const directions = (pick: 'datagrams' | 'bytes'): Record<string, number> =>
    pick === 'datagrams'
      ? { client_to_proxy: udp.clientDatagrams, proxy_to_destination: udp.forwardedDatagrams, destination_to_proxy: udp.replyDatagrams, proxy_to_client: udp.deliveredDatagrams }
      : { client_to_proxy: udp.clientBytes, proxy_to_destination: udp.forwardedBytes, destination_to_proxy: udp.replyBytes, proxy_to_client: udp.deliveredBytes };
  for (const pick of ['datagrams', 'bytes'] as const) {
    new Counter({
      name: `socksgate_udp_${pick}_total`,
      help: `UDP ${pick === 'bytes' ? 'payload bytes' : 'datagrams'} by direction.`,
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [direction, value] of Object.entries(directions(pick))) this.inc({ direction }, value);
      },
    });
  }
  new Counter({
    name: 'socksgate_udp_dropped_total',
    help: 'UDP datagrams dropped, by reason.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      server.sampleKernelDrops();
      this.reset();
      for (const reason of DROP_REASONS) this.inc({ reason }, udp.drops[reason]);
    },
  });
  new Counter({
    name: 'socksgate_udp_fragments_total',
    help: 'UDP datagrams received with FRAG other than 0.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(udp.fragments);
    },
  });
  new Counter({
    name: 'socksgate_udp_reassemblies_total',
    help: 'Fragment sequences reassembled into one datagram.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(udp.reassembled);
    },
  });
  new Counter({
    name: 'socksgate_udp_steered_total',
    help: 'Fixed-port mode with workers: client datagrams that reached a worker other than their association\'s and were passed on to it.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(udp.steeredDatagrams);
    },
  });

  const durations = new SessionDurations(registry);
  server.on('session-end', (end) => durations.observe(COMMANDS.includes(end.command) ? end.command : '-', end.seconds));
  const lookups = new Counter({ name: 'socksgate_dns_lookups_total', help: 'DNS lookups not answered from the cache, by result.', labelNames: ['result'], registers: [registry] });
  const lookupSeconds = new Histogram({
    name: 'socksgate_dns_lookup_duration_seconds',
    help: 'How long DNS lookups took.',
    buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 5],
    registers: [registry],
  });
  server.on('dns-lookup', (seconds, ok) => {
    lookups.inc({ result: ok ? 'ok' : 'error' });
    lookupSeconds.observe(seconds);
  });
  upstreamMetrics(server, registry);
  return registry;
}

/** Gateway mode: one series per upstream (label host:port, never its credentials). */
function upstreamMetrics(server: SocksServer, registry: Registry): void {
  new Gauge({
    name: 'socksgate_upstream_up',
    help: 'Gateway mode: 1 while the upstream is in selection, 0 while its health checks fail (with workers: 0 if any worker has it out).',
    labelNames: ['upstream'],
    aggregator: 'min',
    registers: [registry],
    collect() {
      for (const u of server.upstreams()) this.set({ upstream: u.upstream }, u.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'socksgate_upstream_sessions_active',
    help: 'Gateway mode: sessions carried to the upstream now.',
    labelNames: ['upstream'],
    registers: [registry],
    collect() {
      for (const u of server.upstreams()) this.set({ upstream: u.upstream }, u.sessionsActive);
    },
  });
  new Counter({
    name: 'socksgate_upstream_sessions_total',
    help: 'Gateway mode: sessions carried to the upstream.',
    labelNames: ['upstream'],
    registers: [registry],
    collect() {
      this.reset();
      for (const u of server.upstreams()) this.inc({ upstream: u.upstream }, u.sessionsTotal);
    },
  });
  new Counter({
    name: 'socksgate_upstream_failures_total',
    help: 'Gateway mode: failed health checks (kind="health-check") and sessions that could not reach the upstream (kind="dial").',
    labelNames: ['upstream', 'kind'],
    registers: [registry],
    collect() {
      this.reset();
      for (const u of server.upstreams()) for (const [kind, count] of Object.entries(u.failures)) this.inc({ upstream: u.upstream, kind }, count);
    },
  });
  new Gauge({
    name: 'socksgate_upstream_health_check_seconds',
    help: 'Gateway mode: how long the last successful health check (connect and SOCKS5 greeting) took (with workers: the slowest).',
    labelNames: ['upstream'],
    aggregator: 'max',
    registers: [registry],
    collect() {
      this.reset();
      for (const u of server.upstreams()) if (u.healthCheckSeconds !== null) this.set({ upstream: u.upstream }, u.healthCheckSeconds);
    },
  });
}
