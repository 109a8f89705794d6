// Processes of `npm run bench`: every one started here is recorded by PID and ended by PID (its descendants too,
// found through /proc) in stopAll(), which run.ts calls on success, failure and SIGINT alike.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';

export interface Started {
  name: string;
  child: ChildProcess;
  pid: number;
  stderr: () => string;
}

const started: Started[] = [];

export function start(name: string, command: string, args: string[], options: { stdin?: 'pipe' | 'ignore' } = {}): Started {
  const child = spawn(command, args, { stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`);
  let stderr = '';
  // Always drained, so a chatty server never blocks on a full pipe.
  child.stdout!.on('data', () => undefined);
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  child.on('error', (e) => (stderr += String(e)));
  const s: Started = { name, child, pid: child.pid, stderr: () => stderr };
  started.push(s);
  return s;
}

/** Resolves with the JSON of the first stdout line starting with `prefix` (READY or RESULT). */
export function line(s: Started, prefix: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => finish(new Error(`${s.name}: no ${prefix} line within ${timeoutMs} ms; stderr: ${s.stderr()}`)), timeoutMs);
    const onData = (c: Buffer): void => {
      buffered += c.toString();
      // Complete lines only: a line split over two reads is parsed once whole.
      for (const l of buffered.split('\n').slice(0, -1)) {
        if (l.startsWith(`${prefix} `)) return finish(undefined, JSON.parse(l.slice(prefix.length + 1)) as Record<string, unknown>);
      }
    };
    const onExit = (): void => void setImmediate(() => finish(new Error(`${s.name}: exited before ${prefix}; stderr: ${s.stderr()}`)));
    function finish(error?: Error, value?: Record<string, unknown>): void {
      clearTimeout(timer);
      s.child.stdout!.off('data', onData);
      s.child.off('exit', onExit);
      if (error) reject(error);
      else resolve(value!);
    }
    s.child.stdout!.on('data', onData);
    s.child.on('exit', onExit);
  });
}

export function exited(s: Started, timeoutMs: number): Promise<boolean> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    s.child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Polls until something accepts TCP on 127.0.0.1:port (inside the namespace when `inside` runs there). */
export async function waitForPort(port: number, s: Started, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const c = connect({ host: '127.0.0.1', port }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (up) return;
    if (s.child.exitCode !== null || Date.now() > deadline) throw new Error(`${s.name} did not listen on 127.0.0.1:${port}: ${s.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** pid and all its descendants, from /proc. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const parent = parentOf(Number(entry));
    if (parent === undefined) continue;
    children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
  }
  const tree: number[] = [];
  const queue = [pid];
  while (queue.length > 0 && tree.length < 100_000) {
    const p = queue.shift()!;
    tree.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return tree;
}

/**
 * Memory of a process tree in KiB: Pss summed over its processes (smaps_rollup), and VmRSS summed for reference.
 * Pss splits each shared page between the processes that map it, so the sum over Dante's forked processes counts
 * every page once; a sum of VmRSS would count the pages they share (code, libraries, copy-on-write) once per process.
 */
export function treeMemory(pid: number): { pssKiB: number; rssKiB: number; processes: number } {
  let pssKiB = 0, rssKiB = 0, processes = 0;
  for (const p of processTree(pid)) {
    try {
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      pssKiB += Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
      rssKiB += Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      processes++;
    } catch {
      // Gone between listing and reading.
    }
  }
  return { pssKiB, rssKiB, processes };
}

/** SIGTERM to s and its descendants, SIGKILL to whatever is left after a grace period. */
export async function stop(s: Started, graceMs = 3000): Promise<void> {
  const index = started.indexOf(s);
  if (index >= 0) started.splice(index, 1);
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const tree = processTree(s.pid);
  for (const p of tree) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
  if (!(await exited(s, graceMs))) s.child.kill('SIGKILL');
  for (const p of tree.slice(1)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((s) => stop(s)));
}

/** Synchronous last resort (process 'exit'): SIGKILL to everything still recorded, by PID. */
export function killAllNow(): void {
  for (const s of started) {
    for (const p of processTree(s.pid).reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
}

/** The hard RLIMIT_NOFILE of this process: what the servers may be raised to (raising it needs CAP_SYS_RESOURCE). */
export function nofileHardLimit(): number {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
  return m ? (m[2] === 'unlimited' ? 1_048_576 : Number(m[2])) : 1024;
}
