import { z } from 'zod';
import { parseHostPort } from './endpoint.js';

// The one description of socksgate's configuration: defaults, validation, the command-line flags
// (config key `dns.servers` is flag `--dns-servers`) and the README's config reference all come from here.

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/** Seconds, given as a number (10, 0.5) or with a unit ("500ms", "10s", "5m", "1h"). */
function duration(description: string, defaultSeconds: number) {
  return z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      if (typeof value === 'number') {
        if (Number.isFinite(value) && value >= 0) return value;
      } else {
        const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
        if (m) return Number(m[1]) * UNITS[m[2] ?? 's']!;
      }
      ctx.addIssue({ code: 'custom', message: 'expected a duration: seconds (10, 0.5) or with a unit (500ms, 10s, 5m, 1h)' });
      return z.NEVER;
    })
    .default(defaultSeconds)
    .describe(description)
    .meta({ arg: 'DURATION', kind: 'duration' });
}

const hostPort = (defaultPort?: number) =>
  z.string().superRefine((value, ctx) => {
    const parsed = parseHostPort(value, defaultPort);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
  });

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
    maxClients: z
      .number()
      .int()
      .min(1)
      .default(10_000)
      .describe('Most client connections served at once; more are closed at once.')
      .meta({ arg: 'N' }),
    handshakeTimeout: duration('Time a client has from connecting to sending its complete request.', 10),
    connectTimeout: duration('Time to reach a CONNECT destination, over all of its addresses.', 10),
    idleTimeout: duration('A relayed TCP connection with no traffic either way for this long is closed; 0 never closes.', 3600),
    bindTimeout: duration('Time a BIND waits for the incoming connection.', 60),
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
  .strict();

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
