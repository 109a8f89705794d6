import { isIP } from 'node:net';
import { z } from 'zod';
import { parseHostPort } from './endpoint.js';
import { checkCidr, checkPortSpec, checkStoreUrl, checkUpstreamUrl, upstreamEndpoint } from './values.js';
import { MAX_UDP_PAYLOAD } from 'socksgate-client/protocol';

// The one description of socksgate's configuration: defaults, validation, the command-line flags
// (config key `dns.servers` is flag `--dns-servers`) and the README's config reference all come from here.

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/** Seconds, given as a number (10, 0.5) or with a unit ("500ms", "10s", "5m", "1h"). */
function duration(description: string, defaultSeconds: number, minimum = 0, why = '') {
  return z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      let seconds = Number.NaN;
      if (typeof value === 'number') seconds = value;
      else {
        const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
        if (m) seconds = Number(m[1]) * UNITS[m[2] ?? 's']!;
      }
      if (!Number.isFinite(seconds) || seconds < 0) {
        ctx.addIssue({ code: 'custom', message: 'expected a duration: seconds (10, 0.5) or with a unit (500ms, 10s, 5m, 1h)' });
        return z.NEVER;
      }
      if (seconds < minimum) {
        ctx.addIssue({ code: 'custom', message: `must be at least ${minimum} seconds${why}` });
        return z.NEVER;
      }
      return seconds;
    })
    .default(defaultSeconds)
    .describe(description)
    .meta({ arg: 'DURATION', kind: 'duration' });
}

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** A byte count, given as a number (1048576) or with a unit ("500MB", "10GiB"); 0 for none. */
function bytes(minimum = 0) {
  return z.union([z.number(), z.string()]).transform((value, ctx) => {
    let bytes = Number.NaN;
    if (typeof value === 'number') bytes = value;
    else {
      const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?$/i.exec(value.trim());
      if (m) bytes = Math.round(Number(m[1]) * BYTE_UNITS[(m[2] ?? 'b').toLowerCase()]!);
    }
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      ctx.addIssue({ code: 'custom', message: 'expected a byte count: a whole number (1048576) or with a unit (500MB, 10GiB; KB/MB/GB/TB or KiB/MiB/GiB/TiB)' });
      return z.NEVER;
    }
    if (bytes !== 0 && bytes < minimum) {
      ctx.addIssue({ code: 'custom', message: `must be 0 or at least ${minimum} bytes` });
      return z.NEVER;
    }
    return bytes;
  });
}

function byteSize(description: string, defaultBytes: number, minimum = 0) {
  return bytes(minimum).default(defaultBytes).describe(description).meta({ arg: 'BYTES' });
}

/** An IANA time zone name Intl knows ("UTC", "Europe/Berlin"). */
const timeZone = z.string().superRefine((value, ctx) => {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: value });
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not a time zone this Node.js knows (an IANA name such as UTC, Europe/Berlin or America/New_York)` });
  }
});

const quotaFields = {
  total: 'bytes both ways together',
  upload: 'bytes from the client (client → destination)',
  download: 'bytes to the client (destination → client)',
} as const;

/** One user's quotas in quotas.users: each field given replaces the default's. */
const userQuota = z
  .object({
    total: bytes().optional().describe(quotaFields.total),
    upload: bytes().optional().describe(quotaFields.upload),
    download: bytes().optional().describe(quotaFields.download),
  })
  .strict();

const hostPort = (defaultPort?: number) =>
  z.string().superRefine((value, ctx) => {
    const parsed = parseHostPort(value, defaultPort);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
  });

const destinationEntry = z.string().superRefine((value, ctx) => {
  const text = value.trim();
  if (isIP(text) || text.includes('/')) {
    const problem = checkCidr(text);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  } else if (!/^(\*\.|\.)?([a-z0-9_]([a-z0-9_-]{0,62})\.?)+$/i.test(text)) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not an address, CIDR range, domain (example.org) or domain suffix (.example.org)` });
  }
});

/** An upstream of gateway mode: a SOCKS5 URL with a host and, when credentials are given, both of them. */
const upstreamUrl = z.string().superRefine((value, ctx) => {
  const problem = checkUpstreamUrl(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const cidrEntry = z.string().superRefine((value, ctx) => {
  const problem = checkCidr(value.trim());
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const portEntry = z.union([z.number().int(), z.string()]).superRefine((value, ctx) => {
  const problem = checkPortSpec(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * Default SO_RCVBUF/SO_SNDBUF of relay sockets (udp.receiveBuffer, udp.sendBuffer): a burst of 50
 * datagrams of 2.4 KB on average, answered at once on loopback, lost 1 or 2 in the kernel's default
 * 208 KiB (each datagram costs its truesize, not its length). docs/udp-buffers.md has the figures.
 */
export const RELAY_BUFFER_BYTES = 1024 * 1024;

export const ruleSchema = z
  .object({
    action: z.enum(['allow', 'deny']),
    name: z.string().optional(),
    clients: z.array(cidrEntry).optional(),
    users: z.array(z.string()).optional(),
    groups: z.array(z.string()).optional(),
    commands: z.array(z.enum(['connect', 'bind', 'udp'])).optional(),
    destinations: z.array(destinationEntry).optional(),
    ports: z.array(portEntry).optional(),
  })
  .strict();

function rateLimits(who: string) {
  const rate = (what: string) =>
    z.number().min(0).default(0).describe(`${what} per ${who}, over all its sessions; 0 for no limit.`).meta({ arg: 'N' });
  return z
    .object({
      udpPacketsPerSecond: rate('UDP datagrams per second'),
      udpBytesPerSecond: rate('UDP payload bytes per second'),
      tcpBytesPerSecond: rate('TCP bytes per second (both ways)'),
    })
    .strict()
    .prefault({});
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const configSchema = z
  .object({
    listen: z
      .array(hostPort())
      .min(1, 'give at least one address to listen on')
      .default(['127.0.0.1:1080'])
      .describe('Address to accept SOCKS5 clients on, as HOST:PORT or [IPv6]:PORT; repeat the flag for several.')
      .meta({ arg: 'HOST:PORT' }),
    users: z
      .string()
      .min(1)
      .optional()
      .describe('Users file for username/password authentication (RFC 1929), made with `socksgate passwd`. Without it, clients need no authentication.')
      .meta({ arg: 'FILE' }),
    allowOpen: z
      .boolean()
      .default(false)
      .describe('Allow listening on a non-loopback address without users, which makes an open proxy anyone who can reach it may use.'),
    allowLoopbackTargets: z
      .boolean()
      .default(false)
      .describe('Allow destinations on loopback (127.0.0.0/8, ::1), denied by default: for local set-ups and test suites, never on a shared proxy.'),
    defaultAction: z
      .enum(['allow', 'deny'])
      .default('allow')
      .describe('What happens to a request no rule matches. Even "allow" keeps loopback, link-local and the proxy\'s own addresses denied unless a rule names them.')
      .meta({ arg: 'ACTION' }),
    rules: z
      .array(ruleSchema)
      .default([])
      .describe(
        'Ordered access rules, first match wins: {action: allow|deny, name, clients: [CIDR], users: [name], groups: [name], commands: [connect|bind|udp], destinations: [CIDR|domain|.suffix], ports: [N|N-M]}. As a flag: YAML or JSON.',
      )
      .meta({ arg: 'YAML' }),
    groups: z
      .record(z.string(), z.array(z.string()))
      .default({})
      .describe('Named groups of users for rules: {staff: [alice, bob]}. As a flag: YAML or JSON.')
      .meta({ arg: 'YAML' }),
    limits: z
      .object({
        sessionsPerClient: z.number().int().min(0).default(1000).describe('Most sessions at once from one client address; 0 for no limit.').meta({ arg: 'N' }),
        sessionsPerUser: z.number().int().min(0).default(0).describe('Most sessions at once for one user; 0 for no limit.').meta({ arg: 'N' }),
        overLimitReply: z
          .enum(['general-failure', 'not-allowed'])
          .default('general-failure')
          .describe('The reply to a request over a session limit: 0x01 (general-failure) or 0x02 (not-allowed).')
          .meta({ arg: 'REPLY' }),
        client: rateLimits('client address'),
        user: rateLimits('user'),
        destinationsPerAssociation: z
          .number()
          .int()
          .min(1)
          .default(4096)
          .describe('Most distinct destinations one UDP association may send to; datagrams to more are dropped.')
          .meta({ arg: 'N' }),
        amplificationRatio: z
          .number()
          .min(0)
          .default(100)
          .describe('Per UDP association, bytes coming back may be at most this many times the bytes the client sent (plus the burst); 0 for no limit.')
          .meta({ arg: 'RATIO' }),
        amplificationBurst: z
          .number()
          .int()
          .min(0)
          .default(1024 * 1024)
          .describe('Bytes an association may receive beyond the amplification ratio.')
          .meta({ arg: 'BYTES' }),
        store: z
          .string()
          .superRefine((value, ctx) => {
            const problem = checkStoreUrl(value);
            if (problem) ctx.addIssue({ code: 'custom', message: problem });
          })
          .default('local')
          .describe(
            'Where the session caps and rates are counted (rates leased in chunks): local (across the workers of this machine, by the primary) or redis://[user:pass@]host[:port][/db] (rediss:// for TLS; across every instance using it). A restart applies a change.',
          )
          .meta({ arg: 'STORE' }),
        storeDown: z
          .enum(['local', 'refuse'])
          .default('local')
          .describe("When the store cannot answer: local (this process' own limits decide; a warning, a metric) or refuse (sessions under a session cap get the over-limit reply). Live sessions never end because of it.")
          .meta({ arg: 'MODE' }),
        claimTtl: duration('With Redis: how long the session claims of an instance that stopped answering (killed, cut off) still count. A restart applies a change.', 15, 3, ' (claims are renewed every third of it)'),
      })
      .strict()
      .prefault({}),
    quotas: z
      .object({
        period: z
          .enum(['day', 'week', 'month'])
          .default('month')
          .describe('The period traffic quotas count over: day, week (from Monday) or month (from the 1st), in quotas.timeZone; usage starts at 0 with each period.')
          .meta({ arg: 'PERIOD' }),
        timeZone: timeZone.default('UTC').describe('The time zone (IANA name) in which quota periods begin at midnight.').meta({ arg: 'ZONE' }),
        onExhausted: z
          .enum(['end', 'finish'])
          .default('end')
          .describe("When a user's quota runs out: end (live sessions of the user are closed at the quota) or finish (they go on until they end, and their bytes still count). New sessions get 0x02 either way.")
          .meta({ arg: 'MODE' }),
        total: byteSize(`Default quota per user and period: ${quotaFields.total}, as a number or with a unit (10GiB); 0 for none.`, 0),
        upload: byteSize(`Default quota per user and period: ${quotaFields.upload}; 0 for none.`, 0),
        download: byteSize(`Default quota per user and period: ${quotaFields.download}; 0 for none.`, 0),
        users: z
          .record(z.string().min(1), userQuota)
          .default({})
          .describe('Quotas of single users, replacing the defaults field by field: {alice: {total: 50GiB}, bob: {download: 0}}. As a flag: YAML or JSON.')
          .meta({ arg: 'YAML' }),
        chunk: byteSize(
          "Most bytes a process takes from the store's quota at a time (it keeps up to two on hand, asking ahead); never more than 1/64 of the user's smallest quota. A user is stopped within one chunk per process of the quota.",
          1024 * 1024,
          4096,
        ),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        perUser: z
          .boolean()
          .default(false)
          .describe('Export per-user traffic and quota metrics (label user): off by default, since one series per user can overload Prometheus.'),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        slowAfter: z.number().int().min(1).default(3).describe('Failed logins from one address (within auth.window) after which each new attempt waits first.').meta({ arg: 'N' }),
        blockAfter: z.number().int().min(1).default(10).describe('Failed logins from one address (within auth.window) after which it is blocked.').meta({ arg: 'N' }),
        blockFor: duration('How long a blocked address stays blocked.', 600),
        window: duration('How long failed logins are remembered.', 600),
      })
      .strict()
      .prefault({}),
    admin: hostPort()
      .optional()
      .describe('Admin listener for /metrics (Prometheus), /healthz, /readyz and the /status page, as HOST:PORT; off when unset.')
      .meta({ arg: 'HOST:PORT' }),
    adminAllowRemote: z
      .boolean()
      .default(false)
      .describe('Allow the admin listener on a non-loopback address (it has no authentication: put it behind a firewall).'),
    shutdownTimeout: duration('On SIGTERM, how long live sessions may go on finishing before the rest are closed.', 30),
    pidFile: z
      .string()
      .min(1)
      .optional()
      .describe('Write the process ID to this file (for `socksgate reload --pid-file`); removed on exit.')
      .meta({ arg: 'FILE' }),
    watch: z
      .boolean()
      .default(false)
      .describe('Reload users, rules and limits when the config or users file changes (as on SIGHUP).'),
    workers: z
      .number()
      .int()
      .min(0)
      .max(256)
      .default(0)
      .describe(
        'Worker processes sharing the listeners; each association lives in the worker that took its control connection. 0: one per CPU core. 1: a single process, no workers.',
      )
      .meta({ arg: 'N' }),
    maxClients: z
      .number()
      .int()
      .min(1)
      .default(10_000)
      .describe('Most client connections served at once, over all workers; more are closed at once.')
      .meta({ arg: 'N' }),
    handshakeTimeout: duration('Time a client has from connecting to sending its complete request.', 10),
    connectTimeout: duration('Time to reach a CONNECT destination, over all of its addresses.', 10),
    idleTimeout: duration('A relayed TCP connection with no traffic either way for this long is closed; 0 never closes.', 3600),
    bindTimeout: duration('Time a BIND waits for the incoming connection.', 60),
    udp: z
      .object({
        port: z
          .number()
          .int()
          .min(0)
          .max(65535)
          .default(0)
          .describe(
            'UDP ASSOCIATE relay port. 0: each association gets its own UDP socket on an ephemeral port. N: fixed-port mode, every association shares UDP port N (needed behind L4 load balancers); clients behind one NAT should then declare their UDP port in the request.',
          )
          .meta({ arg: 'PORT' }),
        advertise: z
          .string()
          .refine((v) => isIP(v) !== 0, 'expected an IPv4 or IPv6 address')
          .refine((v) => v !== '0.0.0.0' && v !== '::', 'must be an address clients can send to, not the unspecified address')
          .optional()
          .describe('Address to put in BND.ADDR of UDP ASSOCIATE replies instead of the address the client reached (for NAT and load balancers).')
          .meta({ arg: 'IP' }),
        filtering: z
          .enum(['address-and-port', 'endpoint-independent'])
          .default('address-and-port')
          .describe('Who may send to a client through its association: only endpoints the client has sent to (address-and-port), or anyone (endpoint-independent, "full cone", for P2P and games).')
          .meta({ arg: 'MODE' }),
        fragments: z
          .enum(['reassemble', 'drop'])
          .default('reassemble')
          .describe('Datagrams with FRAG other than 0: reassemble them (RFC 1928 §7) or drop them.')
          .meta({ arg: 'MODE' }),
        fragmentTimeout: duration('Reassembly timer: a fragment sequence not complete in this time is abandoned; at least 5 s (RFC 1928 §7).', 5, 5, ' (RFC 1928 §7)'),
        reassemblyMemory: z
          .number()
          .int()
          .min(1024)
          .default(128 * 1024)
          .describe('Most bytes of fragments held for one association.')
          .meta({ arg: 'BYTES' }),
        reassemblyMemoryTotal: z
          .number()
          .int()
          .min(1024)
          .default(64 * 1024 * 1024)
          .describe('Most bytes of fragments held for all associations together.')
          .meta({ arg: 'BYTES' }),
        maxPayload: z
          .number()
          .int()
          .min(1)
          .max(MAX_UDP_PAYLOAD)
          .default(MAX_UDP_PAYLOAD)
          .describe('Largest datagram payload relayed either way; larger ones are dropped and counted.')
          .meta({ arg: 'BYTES' }),
        idleTimeout: duration('An association with no datagrams either way for this long is closed; 0 never closes (it still ends with its TCP connection).', 0),
        keepalive: duration('TCP keepalive delay on the control connection of an association, so dead clients are noticed; 0 disables.', 30),
        busyPoll: z
          .number()
          .int()
          .min(0)
          .max(1000)
          .default(20)
          .describe(
            'Adaptive busy polling, in microseconds (native helper only): after relaying a batch, a relay socket that was the only one ready is read again for up to this long before the process sleeps; anything else becoming ready ends it at once. Saves a wake-up per datagram at a few busy associations for at most this much CPU per batch; 0 turns it off.',
          )
          .meta({ arg: 'MICROSECONDS' }),
        receiveBuffer: z
          .number()
          .int()
          .min(0)
          .max(1024 * 1024 * 1024)
          .default(RELAY_BUFFER_BYTES)
          .describe(
            "Receive buffer (SO_RCVBUF) of each association's relay socket, in bytes: room for a burst of replies while the process is busy. The kernel caps it at net.core.rmem_max; 0 keeps the kernel's default (about 208 KiB, which lost datagrams of a 50-datagram burst). Datagrams the kernel still drops are counted as socksgate_udp_dropped_total{reason=\"kernel-overflow\"}.",
          )
          .meta({ arg: 'BYTES' }),
        sendBuffer: z
          .number()
          .int()
          .min(0)
          .max(1024 * 1024 * 1024)
          .default(RELAY_BUFFER_BYTES)
          .describe("Send buffer (SO_SNDBUF) of each association's relay socket, in bytes; the kernel caps it at net.core.wmem_max; 0 keeps the kernel's default.")
          .meta({ arg: 'BYTES' }),
      })
      .strict()
      .prefault({}),
    dns: z
      .object({
        servers: z
          .array(hostPort(53))
          .default([])
          .describe("DNS servers for names in requests, as IP or IP:PORT; empty: the system's resolver.")
          .meta({ arg: 'IP[:PORT]' }),
      })
      .strict()
      .prefault({}),
    upstreams: z
      .array(upstreamUrl)
      .default([])
      .describe(
        'Gateway mode: upstream SOCKS5 servers (ours or any standard one) as socks5://[user:pass@]host:port. Each client session is terminated here and carried to one of them (CONNECT, UDP ASSOCIATE and BIND).',
      )
      .meta({ arg: 'URL' }),
    upstream: z
      .object({
        select: z
          .enum(['hash', 'least-sessions'])
          .default('hash')
          .describe('Which upstream a session goes to: hash (rendezvous hashing of the client IP: a client stays on one upstream while the set is stable) or least-sessions (the one carrying fewest sessions now).')
          .meta({ arg: 'MODE' }),
        udp: z
          .enum(['udp', 'tcp'])
          .default('udp')
          .describe('How UDP goes to the upstream: udp (a standard UDP ASSOCIATE per client association) or tcp (UDP over TCP, command 0x05: socksgate upstreams only).')
          .meta({ arg: 'MODE' }),
        healthInterval: duration('Time between health checks of each upstream (a TCP connect and a real SOCKS5 greeting, and login when the URL has credentials).', 5, 0.05),
        healthTimeout: duration('Time one health check may take before it counts as failed.', 2, 0.05),
        healthFailures: z
          .number()
          .int()
          .min(1)
          .default(2)
          .describe('Consecutive failures (health checks, or sessions that could not reach it) after which an upstream is taken out and its sessions are closed; one success brings it back.')
          .meta({ arg: 'N' }),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(LOG_LEVELS).default('info').describe('Log level; debug shows every handshake.').meta({ arg: 'LEVEL' }),
        format: z
          .enum(['auto', 'json', 'pretty'])
          .default('auto')
          .describe('json: one JSON object a line; pretty: for people; auto: pretty on a terminal, json otherwise.')
          .meta({ arg: 'FORMAT' }),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Map<string, number>();
    config.upstreams.forEach((url, i) => {
      const where = upstreamEndpoint(url);
      const first = seen.get(where);
      if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['upstreams', i], message: `${where} is already upstreams[${first}]; list each upstream once` });
      else seen.set(where, i);
    });
    config.rules.forEach((rule, i) => {
      (rule.groups ?? []).forEach((group, j) => {
        if (!(group in config.groups)) {
          ctx.addIssue({ code: 'custom', path: ['rules', i, 'groups', j], message: `no group "${group}" in groups (known: ${Object.keys(config.groups).join(', ') || 'none'})` });
        }
      });
    });
  });

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
