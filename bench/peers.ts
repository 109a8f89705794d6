// The servers under test and the echo targets, each started as a real process on loopback with a generated config.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { line, start, stop, waitForPort, type Started } from './procs.js';
import type { ServerName } from './report.js';
import { danteConfig, requireProgram } from '../test/helpers/servers.js';

export interface RunningServer {
  name: ServerName;
  port: number;
  udp: boolean;
  process: Started;
  /** socksgate's admin listener (its /metrics). */
  admin?: number;
}

/** How socksgate runs: its defaults, or fixed-port mode (UDP on the TCP port) with a given worker count. */
export interface SocksgateMode {
  fixedPort?: boolean;
  workers?: number;
  /** More `serve` flags (the limits group: a users file, rates, the store). */
  extra?: string[];
}

/**
 * A port free for both TCP and UDP on 127.0.0.1 (v2ray serves UDP on its TCP port), picked below the ephemeral
 * range: after the session-rate and memory figures, tens of thousands of TIME_WAIT sockets can leave no ephemeral
 * port to listen on for a while. Bounded retries.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const tcp = createServer();
    const listening = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!listening) continue;
    const udp = createSocket('udp4');
    const free = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((r) => udp.close(() => r())).catch(() => undefined);
    await new Promise<void>((r) => tcp.close(() => r()));
    if (free) return port;
  }
  throw new Error('no port from 20000 to 31999 free for both TCP and UDP');
}

/** An echo target of socksload (`echo-udp` or `echo-tcp`), ended by closing its stdin or by its PID. */
/** [command, args] of `prefix... program args...` (prefix: `ip netns exec NS`, or nothing). */
export function commandLine(prefix: readonly string[], program: string, args: readonly string[]): [string, string[]] {
  const [command = program, ...rest] = [...prefix, program, ...args];
  return [command, rest];
}

/**
 * spinUs: a UDP echo that polls that long before it sleeps (the direct path's; see bench/gen/socksload.c).
 * extra: more of the generator's key=value arguments (addrs=N, once=1 for a TCP echo).
 */
export async function startEcho(generator: string, kind: 'echo-udp' | 'echo-tcp', prefix: string[] = [], port = 0, spinUs = 0, extra: string[] = []): Promise<{ process: Started; port: number }> {
  const args = [...(spinUs > 0 ? [`spin=${spinUs}`] : []), ...extra];
  const p = start(kind, ...commandLine(prefix, generator, [kind, `port=${port}`, 'threads=2', ...args]), { stdin: 'pipe' });
  const ready = await line(p, 'READY', 10_000);
  return { process: p, port: Number(ready.port) };
}

/** The generator's minimal CONNECT server (see bench/gen/socksload.c), a thread per CPU. */
export async function startMinimalServer(generator: string, threads: number): Promise<{ process: Started; port: number }> {
  const p = start('minimal-c', generator, ['connect-server', 'port=0', `threads=${threads}`], { stdin: 'pipe' });
  const ready = await line(p, 'READY', 10_000);
  return { process: p, port: Number(ready.port) };
}

const temp: string[] = [];
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-bench-'));
  temp.push(dir);
  return dir;
}
export function removeTempDirs(): void {
  for (const dir of temp.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** prlimit raises RLIMIT_NOFILE of the server to the hard limit this process may grant. */
function limited(nofile: number, command: string, args: string[]): [string, string[]] {
  return ['prlimit', [`--nofile=${nofile}:${nofile}`, '--', command, ...args]];
}

/**
 * socksgate with its full feature set: its default workers (one per core), default limits and filtering, metrics
 * and the admin listener on; only
 * --allow-loopback-targets (the targets are on loopback), --max-clients raised above the 10,000 default so the
 * idle-association figures are not capped by it, and session log lines off (none of the other servers logs them).
 */
export function socksgateArgs(cli: string, port: number, adminPort: number, extra: string[] = []): string[] {
  return [cli, 'serve', '--listen', `127.0.0.1:${port}`, '--allow-loopback-targets', '--admin', `127.0.0.1:${adminPort}`,
    '--max-clients', '60000', '--log-level', 'warn', ...extra];
}

export async function startServer(name: ServerName, cli: string, nofile: number, mode: SocksgateMode = {}): Promise<RunningServer> {
  const port = await freePort();
  let command: string, args: string[], udp = true, admin: number | undefined;
  if (name === 'socksgate') {
    admin = await freePort();
    const extra = [...(mode.fixedPort ? ['--udp-port', String(port)] : []), ...(mode.workers ? ['--workers', String(mode.workers)] : []), ...(mode.extra ?? [])];
    [command, args] = limited(nofile, process.execPath, socksgateArgs(cli, port, admin, extra));
  } else if (name === 'dante') {
    const binary = requireProgram('danted', 'dante-server');
    const dir = tempDir();
    writeFileSync(join(dir, 'danted.conf'), danteConfig(port));
    [command, args] = limited(nofile, binary, ['-f', join(dir, 'danted.conf'), '-p', join(dir, 'danted.pid')]);
  } else if (name === 'v2ray') {
    const binary = requireProgram('v2ray', 'v2ray');
    const dir = tempDir();
    // The Go peer: a socks inbound with UDP and a freedom outbound; no access log (no other server logs sessions).
    const config = {
      log: { loglevel: 'warning', access: 'none' },
      inbounds: [{ listen: '127.0.0.1', port, protocol: 'socks', settings: { auth: 'noauth', udp: true, ip: '127.0.0.1' } }],
      outbounds: [{ protocol: 'freedom', settings: {} }],
    };
    writeFileSync(join(dir, 'v2ray.json'), JSON.stringify(config, null, 2));
    [command, args] = limited(nofile, binary, ['-config', join(dir, 'v2ray.json')]);
  } else {
    const binary = requireProgram('microsocks', 'microsocks');
    [command, args] = limited(nofile, binary, ['-i', '127.0.0.1', '-p', String(port)]);
    udp = false;
  }
  const p = start(name, command, args);
  try {
    await waitForPort(port, p);
  } catch (e) {
    await stop(p);
    throw e;
  }
  return { name, port, udp, process: p, admin };
}

/** The value of one counter (summed over its labels) in socksgate's /metrics; 0 when absent. */
export async function scrapeCounter(adminPort: number, name: string, labels = ''): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`/metrics: HTTP ${response.status}`);
  let sum = 0;
  for (const l of (await response.text()).split('\n')) {
    if (!l.startsWith(name) || (l[name.length] !== ' ' && l[name.length] !== '{')) continue;
    if (labels && !l.includes(labels)) continue;
    sum += Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return sum;
}
