// Memory per idle UDP association, and the 50,000-association scale check inside a network namespace.
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { line, start, stop, treeMemory, exited, type Started } from './procs.js';
import { commandLine, startEcho, socksgateArgs, type RunningServer } from './peers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Associations one holder process keeps (two descriptors each, under the generator's descriptor limit). */
export const PER_HOLDER = 4000;

export interface HoldResult {
  requested: number;
  open: number;
  errors: number;
  echoed: number;
  closedByServer: number;
  lastError: string;
  setupSeconds: number;
}

/**
 * Opens `count` UDP ASSOCIATE sessions through several holder processes, each association sending one datagram
 * (answered by the echo target) so the server's relay state really exists; calls `whileHeld` once all are open,
 * then closes them all. Client source addresses are spread over 127.0.0.2.. (srcn of them) to stay under
 * per-client session limits.
 */
export async function holdAssociations(opts: { generator: string; prefix?: string[]; proxy: number; target: number; count: number; share: number; srcn: number; uport?: number },
  whileHeld: () => Promise<void>): Promise<HoldResult> {
  const holders: Started[] = [];
  const total: HoldResult = { requested: opts.count, open: 0, errors: 0, echoed: 0, closedByServer: 0, lastError: '', setupSeconds: 0 };
  try {
    for (let from = 0; from < opts.count; from += PER_HOLDER) {
      const n = Math.min(PER_HOLDER, opts.count - from);
      const args = ['idle', `proxy=${opts.proxy}`, `target=${opts.target}`, `count=${n}`, `share=${opts.share}`, `srcn=${opts.srcn}`,
        'send=1', 'threads=4', 'hold=300', `first=${from}`, ...(opts.uport ? [`uport=${opts.uport}`] : [])];
      holders.push(start(`holder ${from / PER_HOLDER}`, ...commandLine(opts.prefix ?? [], opts.generator, args), { stdin: 'pipe' }));
    }
    const ready = await Promise.all(holders.map((h) => line(h, 'READY', 240_000)));
    for (const r of ready) total.setupSeconds = Math.max(total.setupSeconds, Number(r.setupSeconds));
    await whileHeld();
    const results = holders.map((h) => line(h, 'RESULT', 30_000));
    for (const h of holders) h.child.stdin!.end();
    for (const r of await Promise.all(results)) {
      total.open += Number(r.open);
      total.errors += Number(r.errors);
      total.echoed += Number(r.echoed);
      total.closedByServer += Number(r.closedByServer);
      if (r.lastError) total.lastError = String(r.lastError);
    }
    await Promise.all(holders.map((h) => exited(h, 10_000)));
    return total;
  } finally {
    await Promise.all(holders.map((h) => stop(h)));
  }
}

export interface MemorySample {
  server: string;
  count: number;
  idlePssKiB: number;
  loadedPssKiB: number;
  idleRssKiB: number;
  loadedRssKiB: number;
  processes: number;
  perAssociationKiB: number;
  hold: HoldResult;
}

/** Pss of the server's process tree with `count` idle associations open, minus before, per association. */
export async function measureMemory(server: RunningServer, generator: string, target: number, count: number): Promise<MemorySample> {
  await sleep(1000);
  const idle = treeMemory(server.process.pid);
  let loaded = idle;
  const hold = await holdAssociations({ generator, proxy: server.port, target, count, share: 1, srcn: 16 }, async () => {
    await sleep(2000);
    loaded = treeMemory(server.process.pid);
  });
  // Give the server a moment to release them before the next figure.
  await sleep(2000);
  return {
    server: server.name,
    count,
    idlePssKiB: idle.pssKiB,
    loadedPssKiB: loaded.pssKiB,
    idleRssKiB: idle.rssKiB,
    loadedRssKiB: loaded.rssKiB,
    processes: loaded.processes,
    perAssociationKiB: hold.open > 0 ? (loaded.pssKiB - idle.pssKiB) / hold.open : Number.NaN,
    hold,
  };
}

export interface ScaleResult {
  mode: string;
  nofile: number;
  hold: HoldResult;
  serverAlive: boolean;
  serverPssMiB: number;
  serverStderr: string;
  error?: string;
}

/**
 * 50,000 associations on socksgate, in a network namespace made here with only `lo` up: its ephemeral port range
 * is widened to 1024-65535 (a per-namespace sysctl, the host's stays as it is), clients come from 64 loopback
 * addresses, and the namespace is removed at the end whatever happens.
 */
let namespace: string | undefined;

/** Removes the scale check's namespace if it is still there (on SIGINT or failure). */
export function removeNamespace(): void {
  if (namespace === undefined) return;
  try {
    execFileSync('ip', ['netns', 'del', namespace], { stdio: 'ignore' });
  } catch {
    // Already removed.
  }
  namespace = undefined;
}

export async function scale(generator: string, cli: string, nofile: number, count: number): Promise<ScaleResult[]> {
  const ns = `sgbench${process.pid}`;
  const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const inside = ['ip', 'netns', 'exec', ns];
  ip('netns', 'add', ns);
  namespace = ns;
  const results: ScaleResult[] = [];
  try {
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    // Ephemeral ports from 2048 up; fixed-port clients bind 1024-2047 (64 source addresses × 1024 ports) themselves,
    // since each of their UDP sockets would otherwise take a port number the server's relay sockets then cannot use.
    ip('netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=2048 65535');
    const echo = await startEcho(generator, 'echo-udp', inside, 5001);
    try {
      // An association holds two descriptors (its control connection and its relay socket) and the descriptor limit
      // is per process: enough workers that each stays well under it, whatever the kernel's spread of connections.
      const workers = Math.max(cpus().length, Math.ceil((count * 2 * 1.5) / nofile));
      const modes: Array<{ mode: string; port: number; extra: string[]; share: number }> = [
        // Default mode: one relay socket per association, so one client UDP socket may serve 16 of them.
        { mode: `default (a UDP socket per association), --workers ${workers}`, port: 1080, extra: ['--workers', String(workers)], share: 16 },
        // Fixed-port mode tells associations apart by client address and port: one client socket each.
        { mode: `fixed port (--udp-port), --workers ${workers}`, port: 1081, extra: ['--udp-port', '1081', '--workers', String(workers)], share: 1 },
      ];
      for (const m of modes) {
        const server = start(`socksgate ${m.mode}`, ...commandLine(inside, 'prlimit', [`--nofile=${nofile}:${nofile}`, '--',
          process.execPath, ...socksgateArgs(cli, m.port, 9090 + m.port - 1080, m.extra)]));
        try {
          await waitInside(generator, inside, m.port, server);
          let pss = 0;
          const hold = await holdAssociations({ generator, prefix: inside, proxy: m.port, target: echo.port, count, share: m.share, srcn: 64, ...(m.share === 1 ? { uport: 1024 } : {}) }, async () => {
            await sleep(3000);
            pss = treeMemory(server.pid).pssKiB;
          });
          results.push({ mode: m.mode, nofile, hold, serverAlive: server.child.exitCode === null && server.child.signalCode === null,
            serverPssMiB: Math.round(pss / 1024), serverStderr: server.stderr().slice(-600) });
        } catch (e) {
          results.push({ mode: m.mode, nofile, hold: { requested: count, open: 0, errors: count, echoed: 0, closedByServer: 0, lastError: '', setupSeconds: 0 },
            serverAlive: server.child.exitCode === null, serverPssMiB: 0, serverStderr: server.stderr().slice(-600), error: String(e) });
        } finally {
          await stop(server);
        }
      }
    } finally {
      await stop(echo.process);
    }
  } finally {
    removeNamespace();
  }
  return results;
}

/** The namespace's loopback is not reachable from here: the generator waits inside it for the port. */
async function waitInside(generator: string, inside: string[], port: number, server: Started): Promise<void> {
  const probe = start('probe', ...commandLine(inside, generator, ['probe', `port=${port}`, 'seconds=15']));
  try {
    const r = await line(probe, 'RESULT', 20_000);
    if (Number(r.up) !== 1) throw new Error('not listening');
  } catch (e) {
    throw new Error(`socksgate did not listen on port ${port} in the namespace (${String(e)}): ${server.stderr()}`);
  } finally {
    await stop(probe);
  }
}
