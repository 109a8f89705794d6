#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Logger } from 'pino';
import { parse as parseYaml } from 'yaml';
import { parseProxy } from 'socksgate-client';
import { parseDestination, parseHostPort, type HostPort } from './config/endpoint.js';
import { LOG_LEVELS } from './config/schema.js';
import { formatReport, runCheck } from './tools/check.js';
import { DnsStub } from './tools/dns-stub.js';
import { UdpForwarder } from './tools/udp-forward.js';
import { createTunnel } from './tools/tunnel.js';
import { isLoopbackHost } from './config/endpoint.js';
import { ConfigError } from './config/errors.js';
import { loadConfig } from './config/load.js';
import { OPTIONS, formatValue, type OptionInfo } from './config/options.js';
import { createLogger } from './observe/log.js';
import { AdminServer } from './observe/admin.js';
import { usageReport, usageTable, type UsageReader, type UsageReport } from './observe/usage.js';
import { formatAddress, addressFromHost } from 'socksgate-client/protocol';
import { reloadableFromConfig, restartOnlyChanges } from './server/from-config.js';
import { socksServerFromConfig } from './gateway/from-config.js';
import { watch } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { setUserInFile, UserStore } from './server/users.js';
import cluster from 'node:cluster';
import type { Config } from './config/schema.js';
import { sendToPrimary } from './cluster/messages.js';
import { Primary } from './cluster/primary.js';
import { udpIo } from './native/addon.js';
import { WorkerSteering } from './cluster/steering.js';
import { LimitHost, openLimitStore } from './cluster/limit-store.js';
import { linkWorker, workerCount, workerIdentity } from './cluster/worker.js';

// The nearest package.json above this file (dist/ in the package, build/src/ in the test build).
function packageVersion(): string {
  for (let dir = new URL('.', import.meta.url), i = 0; i < 4; i++, dir = new URL('..', dir)) {
    try {
      return (JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { version: string }).version;
    } catch {
      // not here: one level up
    }
  }
  return 'unknown';
}
const pkg = { version: packageVersion() };

/** A flag value as the schema expects it: numbers become numbers when they look like one. */
function flagParser(option: OptionInfo): ((value: string, previous: unknown) => unknown) | undefined {
  switch (option.kind) {
    case 'list':
      return (value, previous) => [...((previous as string[] | undefined) ?? []), ...value.split(',').filter(Boolean)];
    case 'number':
    case 'duration':
      return (value) => (value.trim() !== '' && !Number.isNaN(Number(value)) ? Number(value) : value);
    case 'yaml':
      // Invalid YAML stays a string, so validation names the flag and what it expected.
      return (value) => {
        try {
          return parseYaml(value) as unknown;
        } catch {
          return value;
        }
      };
    default:
      return undefined;
  }
}

function addConfigOptions(command: Command): void {
  for (const option of OPTIONS) {
    const spec = option.kind === 'boolean' ? option.flag : `${option.flag} <${option.arg}>`;
    const shown = formatValue(option.defaultValue, option.kind);
    const help = `${option.description}${option.kind === 'list' ? ' Repeatable.' : ''}${shown ? ` (default: ${shown})` : ''}`;
    const flag = new Option(spec, help);
    if (option.choices) flag.choices(option.choices);
    const parse = flagParser(option);
    if (parse) flag.argParser(parse);
    command.addOption(flag);
  }
}

/** Commander's option values, keyed by config key ("dns.servers"). */
function flagValues(command: Command): Map<string, unknown> {
  const values = command.opts<Record<string, unknown>>();
  const out = new Map<string, unknown>();
  for (const option of OPTIONS) {
    const name = option.flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (values[name] !== undefined) out.set(option.key, values[name]);
  }
  return out;
}

async function serve(command: Command): Promise<void> {
  const { config: file } = command.opts<{ config?: string }>();
  const flags = flagValues(command);
  const config = await loadConfig({ file, flags });
  const { count: workers, why } = workerCount(config.workers);
  // The primary says how many workers it chose and why (a container's CPU limit, the cores).
  if (cluster.isPrimary && config.workers === 0) createLogger(config.log).info({ workers, why }, why);
  if (cluster.isPrimary && workers > 1) return servePrimary(config, workers, () => loadConfig({ file, flags }), file);
  return serveOne(config, () => loadConfig({ file, flags }), file);
}

/** One process serving SOCKS (the whole server, or one worker of several). */
async function serveOne(first: Config, load: () => Promise<Config>, file: string | undefined): Promise<void> {
  let config = first;
  const worker = workerIdentity();
  const log = worker ? createLogger(config.log).child({ worker: worker.slot }) : createLogger(config.log);
  exitWithReason(log);
  const steering = worker && config.udp.port !== 0 ? new WorkerSteering(log) : null;
  const limitStore = await openLimitStore(config.limits, worker !== null, log);
  const server = await socksServerFromConfig(config, log, { maxClients: worker ? Math.ceil(config.maxClients / worker.of) : config.maxClients, steer: steering, limitStore });
  const pidFile = config.pidFile;
  const shutdownMs = config.shutdownTimeout * 1000;
  const drain = async (deadlineMs: number): Promise<void> => {
    // Stop accepting and report not-ready at once; live sessions get up to shutdownTimeout to finish.
    const cut = await server.drain(deadlineMs);
    if (cut > 0) log.warn({ sessions: cut, shutdownTimeout: deadlineMs / 1000 }, 'shutdown deadline reached: closed the sessions still open');
  };

  // Users, rules and limits again, live sessions untouched. Resolves with the keys that need a restart.
  const reloadNow = async (): Promise<string[]> => {
    const next = await load();
    server.reload(await reloadableFromConfig(next));
    const ignored = restartOnlyChanges(config, next);
    config = next;
    return ignored;
  };

  if (worker) {
    linkWorker(server, steering, log, { reload: reloadNow, drain, shutdownMs });
    await steering?.open();
    const bound = await server.listen();
    log.debug({ listen: bound }, 'worker listening');
    sendToPrimary({ sg: 'listening', addresses: bound });
    return;
  }

  const admin = config.admin ? new AdminServer(server) : null;
  // Handlers go in before the "listening" line: a supervisor may send SIGTERM as soon as it reads it.
  stopOnSignals(
    log,
    async () => {
      await drain(shutdownMs);
      await admin?.close();
      if (pidFile) await rm(pidFile, { force: true });
    },
    () => ({ sessions: server.sessionCount, deadlineSeconds: config.shutdownTimeout }),
  );
  reloadOn(config, file, log, async (why) => {
    const ignored = await reloadNow();
    log.info({ why, sessions: server.sessionCount, ...(ignored.length ? { needsRestart: ignored } : {}) }, 'configuration reloaded');
    if (ignored.length) log.warn({ keys: ignored }, `a restart is needed to apply: ${ignored.join(', ')}`);
  });
  await listenAdmin(admin, config, log);
  const bound = await server.listen();
  if (pidFile) await writeFile(pidFile, `${process.pid}\n`);
  logListening(log, bound, config);
}

/** `--workers N`: the primary forks N workers and serves only the admin listener and signals. */
async function servePrimary(first: Config, workers: number, load: () => Promise<Config>, file: string | undefined): Promise<void> {
  let config = first;
  const log = createLogger(config.log);
  exitWithReason(log);
  const primary = new Primary(workers, log);
  // limits.store: local — the primary counts the session claims of its workers.
  const limitHost = config.limits.store === 'local' ? new LimitHost() : null;
  // Quota usage for the admin endpoint: the primary's ledger, or (Redis) a connection of the primary's own.
  const usageStore = config.admin && limitHost === null ? await openLimitStore(config.limits, false, log) : null;
  const readUsage: UsageReader = (period) => (limitHost ? Promise.resolve(limitHost.quotas.usage(period)) : usageStore ? usageStore.quotaUsage(period) : Promise.resolve([]));
  const admin = config.admin ? new AdminServer({ ...primary.adminSource(), usage: () => usageReport(config.quotas, readUsage) }) : null;
  const pidFile = config.pidFile;
  let draining: Promise<{ exited: Promise<void> }> | null = null;
  stopOnSignals(
    log,
    async () => {
      await (await draining!).exited;
      limitHost?.close();
      await usageStore?.close();
      await admin?.close();
      if (pidFile) await rm(pidFile, { force: true });
    },
    () => ({ workers: primary.workerCount, deadlineSeconds: config.shutdownTimeout }),
    // The "shutting down" line comes once every worker has stopped accepting.
    () => (draining = primary.drain(config.shutdownTimeout * 1000)).then(() => undefined),
  );
  reloadOn(config, file, log, async (why) => {
    // Checked here first, so a bad file is refused once, not by each worker.
    const next = await load();
    const replies = await primary.request('reload');
    const failed = replies.find((r) => !r.ok);
    if (failed) throw new Error(`worker ${failed.worker}: ${failed.error}`);
    const ignored = restartOnlyChanges(config, next);
    config = next;
    log.info({ why, workers: replies.length, ...(ignored.length ? { needsRestart: ignored } : {}) }, 'configuration reloaded');
    if (ignored.length) log.warn({ keys: ignored }, `a restart is needed to apply: ${ignored.join(', ')}`);
  });
  await listenAdmin(admin, config, log);
  let bound: Array<{ host: string; port: number }>;
  try {
    bound = await primary.start();
  } catch (error) {
    log.error({ reason: (error as Error).message }, 'cannot start the workers');
    await (await primary.drain(0)).exited;
    await admin?.close();
    process.exit(1);
  }
  if (pidFile) await writeFile(pidFile, `${process.pid}\n`);
  logListening(log, bound, config, workers);
}

/** SIGHUP, and with `watch` a change of the config or users file, run `apply`; a failure keeps the config in force. */
function reloadOn(config: Config, file: string | undefined, log: Logger, apply: (why: string) => Promise<void>): void {
  let reloading: Promise<void> = Promise.resolve();
  const reload = (why: string): void => {
    reloading = reloading.then(() =>
      apply(why).catch((error: Error) => {
        log.error({ why, reason: error.message }, 'reload refused: the configuration in force stays');
      }),
    );
  };
  process.on('SIGHUP', () => reload('SIGHUP'));
  if (config.watch) watchFiles([file, config.users], () => reload('file changed'), log);
}

async function listenAdmin(admin: AdminServer | null, config: Config, log: Logger): Promise<void> {
  if (!admin || !config.admin) return;
  const where = parseHostPort(config.admin) as HostPort;
  const bound = await admin.listen(where.host, where.port);
  const text = formatAddress(addressFromHost(bound.host, bound.port));
  log.info({ admin: text }, `admin listening on http://${text}/ (metrics, healthz, readyz, status)`);
}

function logListening(log: Logger, bound: Array<{ host: string; port: number }>, config: Config, workers = 1): void {
  const where = bound.map((b) => formatAddress(addressFromHost(b.host, b.port)));
  const auth = config.users ? 'username/password' : 'none';
  log.info({ listen: where, auth, workers, udpIo: udpIo().description }, `socksgate ${pkg.version} listening on ${where.join(', ')}${workers > 1 ? ` (${workers} workers)` : ''}`);
}

/** Calls `onChange` (debounced) when one of the files changes; editors that replace files are handled. */
function watchFiles(files: Array<string | undefined>, onChange: () => void, log: Logger): void {
  let timer: NodeJS.Timeout | null = null;
  const changed = (): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, 200);
  };
  for (const file of files) {
    if (!file) continue;
    // Watch the folder: a file replaced by rename (as editors and `socksgate passwd` do) keeps being seen.
    const name = basename(file);
    try {
      watch(dirname(file), (_event, changedName) => {
        if (changedName === null || changedName === name) changed();
      }).unref();
    } catch (error) {
      log.warn({ file, err: (error as Error).message }, 'cannot watch the file; reload with SIGHUP instead');
    }
  }
}

/**
 * An exception nothing caught, or a rejection nothing handled, ends the server with exit code 1 as
 * Node would, but with one log line that says what happened (Node's own report goes to stderr only).
 */
function exitWithReason(log: Logger): void {
  const crash = (what: string) => (error: unknown) => {
    log.fatal({ err: error }, `${what}: ${(error as Error)?.message ?? String(error)}; exiting with code 1`);
    process.exit(1);
  };
  process.on('uncaughtException', crash('uncaught exception'));
  process.on('unhandledRejection', crash('unhandled rejection'));
}

/** SIGTERM and SIGINT run `prepare` (before the "shutting down" line), then `close`, then exit 0 (1 if closing failed). */
function stopOnSignals(log: Logger, close: () => Promise<void>, state: () => object = () => ({}), prepare: () => Promise<void> = () => Promise.resolve()): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    prepare()
      .then(() => {
        log.info({ signal, ...state() }, 'shutting down');
        return close();
      })
      .then(
        () => process.exit(0),
        (error: unknown) => {
          log.error({ signal, err: error }, `shutdown failed: ${(error as Error)?.message ?? String(error)}; exiting with code 1`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** Parses a flag value with `parse`, or fails with the reason (commander names the flag). */
function hostPortFlag(parse: (text: string) => HostPort | string): (text: string) => HostPort {
  return (text) => {
    const parsed = parse(text);
    if (typeof parsed === 'string') throw new InvalidArgumentError(parsed);
    return parsed;
  };
}

interface ToolOptions {
  proxy: string;
  listen: HostPort;
  logLevel: string;
  logFormat: 'auto' | 'json' | 'pretty';
}

function checkProxy(url: string): string {
  try {
    parseProxy(url);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  return url;
}

function toolCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .requiredOption('--proxy <URL>', 'the SOCKS5 proxy: socks5://[user:pass@]host:port (socks5h:// to let it resolve names)', checkProxy)
    .requiredOption('--listen <HOST:PORT>', 'local UDP address to listen on, such as 127.0.0.1:5353', hostPortFlag((t) => parseHostPort(t)))
    .addOption(new Option('--log-level <LEVEL>', 'log level').choices(LOG_LEVELS).default('info', 'info'))
    .addOption(new Option('--log-format <FORMAT>', 'json, pretty, or auto (pretty on a terminal)').choices(['auto', 'json', 'pretty']).default('auto', 'auto'));
}

/** From a terminal: the password is typed with echo off (raw mode), Backspace erases, Ctrl-C aborts. */
function readPasswordFromTerminal(): Promise<Buffer> {
  const stdin = process.stdin;
  // Echo goes off before the prompt: nothing typed after the prompt is shown.
  stdin.setRawMode(true);
  process.stderr.write('Password (then Enter): ');
  stdin.resume();
  const typed: number[] = [];
  return new Promise((resolve) => {
    const finish = (): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    const onData = (chunk: Buffer): void => {
      for (const byte of chunk) {
        if (byte === 0x0d || byte === 0x0a || byte === 0x04) {
          finish();
          return resolve(Buffer.from(typed));
        }
        if (byte === 0x03) {
          finish();
          process.stderr.write('passwd: cancelled\n');
          process.exit(130);
        }
        if (byte === 0x7f || byte === 0x08) typed.pop();
        else typed.push(byte);
      }
    };
    stdin.on('data', onData);
  });
}

async function readPassword(): Promise<Buffer> {
  if (process.stdin.isTTY) return readPasswordFromTerminal();
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks);
  const newline = text.indexOf(0x0a);
  const line = newline < 0 ? text : text.subarray(0, newline);
  return line.at(-1) === 0x0d ? line.subarray(0, -1) : line;
}

async function passwd(user: string, options: { file: string }): Promise<void> {
  const password = await readPassword();
  const outcome = await setUserInFile(options.file, user, password);
  process.stderr.write(`${outcome} user ${user} in ${options.file}\n`);
}

const program = new Command('socksgate')
  .description('SOCKS5 proxy server (RFC 1928/1929) with CONNECT, BIND and UDP ASSOCIATE')
  .version(pkg.version)
  .showHelpAfterError('(run with --help for usage)')
  // A bad flag, value or command is a usage error: exit 2, as for a bad config (commander says why first).
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

const serveCommand = program
  .command('serve')
  .description('Run the SOCKS5 server in the foreground. Flags override the config file; every config key has a flag.')
  .option('-c, --config <FILE>', 'YAML config file; its keys are the flag names (dns.servers is --dns-servers)')
  .action(async (_options, command: Command) => serve(command));
addConfigOptions(serveCommand);
serveCommand.addHelpText(
  'after',
  `
Examples:
  socksgate serve                                  # 127.0.0.1:1080, no authentication
  socksgate serve --listen 127.0.0.1:1080 --listen [::1]:1080
  socksgate serve --listen 0.0.0.0:1080 --users users.txt
  socksgate serve --config socksgate.yaml --log-level debug`,
);

toolCommand('udp-forward', 'A local UDP port whose datagrams go through the proxy to one destination (one association per local peer).')
  .requiredOption('--to <HOST:PORT>', 'where every datagram goes (a name is resolved by the proxy with socks5h://)', hostPortFlag((t) => parseDestination(t)))
  .option('--idle-timeout <SECONDS>', 'a local peer silent this long loses its association', (v) => Number(v), 60)
  .addHelpText('after', '\nExample:\n  socksgate udp-forward --proxy socks5://127.0.0.1:1080 --listen 127.0.0.1:5300 --to 192.0.2.53:53\n  dig -p 5300 @127.0.0.1 example.org')
  .action(async (options: ToolOptions & { to: HostPort; idleTimeout: number }) => {
    const log = createLogger({ level: options.logLevel, format: options.logFormat });
    const forwarder = new UdpForwarder({ proxy: options.proxy, listen: options.listen, to: options.to, idleTimeoutMs: options.idleTimeout * 1000, logger: log });
    stopOnSignals(log, () => forwarder.close(), () => ({ peers: forwarder.peerCount }));
    const bound = await forwarder.listen();
    const where = formatAddress(addressFromHost(bound.host, bound.port));
    log.info({ listen: [where], to: `${options.to.host}:${options.to.port}` }, `socksgate udp-forward listening on ${where}, forwarding to ${options.to.host}:${options.to.port}`);
  });

toolCommand('dns', 'A DNS stub: queries on a local UDP port go through the proxy over UDP, and over TCP when truncated or UDP fails.')
  .requiredOption('--upstream <IP[:PORT]>', 'the DNS server to ask through the proxy (port 53 by default)', hostPortFlag((t) => parseDestination(t, 53)))
  .option('--timeout <SECONDS>', 'wait this long for a UDP answer before asking over TCP', (v) => Number(v), 2)
  .addHelpText('after', '\nExample:\n  socksgate dns --proxy socks5://127.0.0.1:1080 --listen 127.0.0.1:5353 --upstream 192.0.2.53\n  dig -p 5353 @127.0.0.1 example.org')
  .action(async (options: ToolOptions & { upstream: HostPort; timeout: number }) => {
    const log = createLogger({ level: options.logLevel, format: options.logFormat });
    const stub = new DnsStub({ proxy: options.proxy, listen: options.listen, upstream: options.upstream, timeoutMs: options.timeout * 1000, logger: log });
    stopOnSignals(log, () => stub.close(), () => ({ ...stub.stats }));
    const bound = await stub.listen();
    const where = formatAddress(addressFromHost(bound.host, bound.port));
    log.info({ listen: [where], upstream: `${options.upstream.host}:${options.upstream.port}` }, `socksgate dns listening on ${where}, asking ${options.upstream.host}:${options.upstream.port}`);
  });

program
  .command('check')
  .description("Diagnose a SOCKS5 server's TCP and UDP paths: methods, CONNECT, the UDP ASSOCIATE reply, round trip, sizes, fragments, source-port and lifetime safety, latency.")
  .argument('<URL>', 'the server: socks5://[user:pass@]host:port', checkProxy)
  .option('--tcp <HOST:PORT>', 'a TCP endpoint to CONNECT to', hostPortFlag((t) => parseDestination(t)))
  .option('--udp-echo <HOST:PORT>', 'a UDP echo service (enables the size, fragment and latency checks)', hostPortFlag((t) => parseDestination(t)))
  .option('--dns <IP[:PORT]>', 'a DNS server for a UDP round trip with a real query', hostPortFlag((t) => parseDestination(t, 53)))
  .addOption(new Option('--dns-name <NAME>', 'the name to ask the --dns server for').default('example.org', 'example.org'))
  .option('--timeout <MS>', 'milliseconds to wait at each step', (v) => Number(v), 2000)
  .option('--json', 'print the report as JSON')
  .addHelpText('after', '\nExit code: 0 when no check failed, 1 when one did.\n\nExample:\n  socksgate check socks5://127.0.0.1:1080 --udp-echo 127.0.0.1:7 --tcp 127.0.0.1:80')
  .action(async (url: string, options: { tcp?: HostPort; udpEcho?: HostPort; dns?: HostPort; dnsName: string; timeout: number; json?: boolean }) => {
    const report = await runCheck({
      proxy: url,
      ...(options.tcp ? { tcp: options.tcp } : {}),
      ...(options.udpEcho ? { udpEcho: options.udpEcho } : {}),
      ...(options.dns ? { dns: { ...options.dns, name: options.dnsName } } : {}),
      timeoutMs: options.timeout,
      onProgress: (message) => process.stderr.write(`checking ${message} …\n`),
    });
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
    process.exitCode = report.verdict === 'fail' ? 1 : 0;
  });

program
  .command('tunnel')
  .description('A local SOCKS5 server for unmodified applications: CONNECT passes through to --server, and UDP ASSOCIATE traffic goes to it over TCP with --udp-over-tcp.')
  .requiredOption('--server <URL>', 'the remote socksgate: socks5://[user:pass@]host:port', checkProxy)
  .addOption(new Option('--listen <HOST:PORT>', 'where local applications connect').argParser(hostPortFlag((t) => parseHostPort(t))).default({ host: '127.0.0.1', port: 1080 }, '127.0.0.1:1080'))
  .option('--udp-over-tcp', 'carry UDP to the server in TCP frames (for networks that block UDP)')
  .option('--share-connection', 'with --udp-over-tcp: one TCP connection per local association, not one per flow')
  .option('--users <FILE>', 'users file for the local listener (needed to listen beyond loopback)')
  .addOption(new Option('--log-level <LEVEL>', 'log level').choices(LOG_LEVELS).default('info', 'info'))
  .addOption(new Option('--log-format <FORMAT>', 'json, pretty, or auto (pretty on a terminal)').choices(['auto', 'json', 'pretty']).default('auto', 'auto'))
  .addHelpText('after', '\nExample:\n  socksgate tunnel --listen 127.0.0.1:1080 --server socks5://user:pass@proxy.example:1080 --udp-over-tcp')
  .action(async (options: { server: string; listen: HostPort; udpOverTcp?: boolean; shareConnection?: boolean; users?: string; logLevel: string; logFormat: 'auto' | 'json' | 'pretty' }) => {
    if (!options.users && !isLoopbackHost(options.listen.host)) {
      throw new ConfigError('ERR_OPEN_PROXY', `listening on ${options.listen.host} without users is an open proxy; add --users FILE or listen on 127.0.0.1`);
    }
    const log = createLogger({ level: options.logLevel, format: options.logFormat });
    const users = options.users ? await UserStore.load(options.users) : null;
    const tunnel = createTunnel({ listen: options.listen, server: options.server, udpOverTcp: options.udpOverTcp ?? false, shareConnection: options.shareConnection ?? false, users, logger: log });
    stopOnSignals(log, () => tunnel.close(), () => ({ sessions: tunnel.sessionCount }));
    const bound = await tunnel.listen();
    const where = bound.map((b) => formatAddress(addressFromHost(b.host, b.port)));
    const server = parseProxy(options.server);
    log.info({ listen: where, server: `${server.host}:${server.port}`, udp: options.udpOverTcp ? 'over tcp' : 'udp associate' }, `socksgate tunnel listening on ${where.join(', ')}, to ${server.host}:${server.port}`);
  });

program
  .command('reload')
  .description('Ask a running server to reload its users, rules and limits (sends it SIGHUP).')
  .option('--pid-file <FILE>', 'the pid file the server writes (serve --pid-file)')
  .option('--pid <PID>', 'the server process ID', (v) => Number(v))
  .action(async (options: { pidFile?: string; pid?: number }) => {
    let pid = options.pid;
    if (pid === undefined) {
      if (!options.pidFile) throw new ConfigError('ERR_RELOAD', 'give --pid-file FILE (as passed to serve --pid-file) or --pid PID');
      const text = await readFile(options.pidFile, 'utf8').catch((error: NodeJS.ErrnoException) => {
        throw new ConfigError('ERR_RELOAD', `cannot read ${options.pidFile} (${error.code}): is the server running with --pid-file ${options.pidFile}?`);
      });
      pid = Number(text.trim());
    }
    if (!Number.isInteger(pid) || pid <= 0) throw new ConfigError('ERR_RELOAD', `"${pid}" is not a process ID`);
    try {
      process.kill(pid, 'SIGHUP');
    } catch (error) {
      throw new ConfigError('ERR_RELOAD', `cannot signal process ${pid}: ${(error as NodeJS.ErrnoException).code} (is the server running?)`);
    }
    process.stderr.write(`asked process ${pid} to reload; its log says whether the new configuration was accepted\n`);
  });

const users = program.command('users').description('Users of a running server: their traffic this quota period.');
users
  .command('usage')
  .description("Each user's traffic this period, quotas and what is left, from a running server's admin listener (GET /users/usage).")
  .requiredOption('--admin <HOST:PORT>', "the server's admin listener (serve --admin)")
  .option('--json', 'print the JSON the admin listener answers')
  .action(async (options: { admin: string; json?: boolean }) => {
    const where = parseHostPort(options.admin);
    if (typeof where === 'string') throw new ConfigError('ERR_USAGE', `--admin ${options.admin}: ${where}`);
    const host = where.host.includes(':') ? `[${where.host}]` : where.host;
    let response: Response;
    try {
      response = await fetch(`http://${host}:${where.port}/users/usage`);
    } catch (error) {
      throw new ConfigError('ERR_USAGE', `cannot reach the admin listener at ${options.admin} (${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}): is the server running with --admin ${options.admin}?`);
    }
    const body = await response.text();
    if (!response.ok) throw new ConfigError('ERR_USAGE', `the admin listener answered ${response.status}: ${body.trim()}`);
    process.stdout.write(options.json ? `${body}\n` : usageTable(JSON.parse(body) as UsageReport));
  });

program
  .command('passwd')
  .description('Add a user to a users file, or set a new password; the password is read from standard input.')
  .requiredOption('-f, --file <FILE>', 'users file to create or update (written with mode 0600)')
  .argument('<USER>', 'user name (1 to 255 bytes, no ":" or spaces)')
  .addHelpText('after', '\nExample:\n  echo "s3cret" | socksgate passwd --file users.txt alice')
  .action(passwd);

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`socksgate: ${error.message}\n`);
    process.exit(2);
  }
  const e = error as NodeJS.ErrnoException;
  const hint = e.code === 'EADDRINUSE' ? ' (another program uses that address: pick another --listen port)' : e.code === 'EACCES' ? ' (ports below 1024 need privileges)' : '';
  process.stderr.write(`socksgate: ${e.message}${hint}\n`);
  process.exit(1);
});
