import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { waitFor } from './peer.js';

/** Why network-namespace tests cannot run here, with the command that fixes it; null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root: run the tests as root (sudo npm test), as .ci/run does';
  const probe = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (probe.error) return `\`ip netns\` is not available (${probe.error.message}); install it with: apt-get install -y iproute2`;
  if (probe.status !== 0) return `\`ip netns list\` failed: ${probe.stderr.trim()} (the kernel needs network namespaces; run as root)`;
  return null;
}

/** Fails (never skips) a test that needs network namespaces where they are not available. */
export function requireNetns(): void {
  const why = netnsUnavailable();
  if (why !== null) throw new Error(why);
}

/** A process started inside a namespace, with its stdout read as JSON lines. */
export class NsProcess {
  readonly lines: Array<Record<string, unknown>> = [];
  stderr = '';
  private pending = '';
  private readonly waiters = new Set<() => void>();
  private nextId = 1;

  constructor(
    readonly namespace: string,
    readonly child: ChildProcess,
  ) {
    child.stdout!.on('data', (chunk: Buffer) => {
      this.pending += chunk.toString();
      let newline: number;
      while ((newline = this.pending.indexOf('\n')) >= 0) {
        const text = this.pending.slice(0, newline);
        this.pending = this.pending.slice(newline + 1);
        try {
          this.lines.push(JSON.parse(text) as Record<string, unknown>);
        } catch {
          this.lines.push({ text });
        }
      }
      this.wake();
    });
    child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    child.on('exit', () => this.wake());
    // A driver that died must not take the test's stdin writes down with an EPIPE.
    child.stdin?.on('error', () => {});
  }

  get pid(): number {
    return this.child.pid!;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** The first line satisfying `match` (already read or still to come), within `timeoutMs`. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, timeoutMs = 5000, what = 'a matching line'): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = this.lines.find(match);
        if (found) {
          finish();
          resolve(found);
        } else if (this.exited) {
          finish();
          reject(new Error(`${this.namespace}: exited before ${what}; stderr: ${this.stderr}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.namespace}: no ${what} within ${timeoutMs} ms; lines: ${JSON.stringify(this.lines.slice(-5))}; stderr: ${this.stderr}`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Sends one JSON command on stdin and waits for the line that answers it (same `id`). */
  async request(command: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    this.child.stdin!.write(`${JSON.stringify({ ...command, id })}\n`);
    const reply = await this.waitForLine((line) => line.id === id, timeoutMs, `answer to ${JSON.stringify(command)}`);
    if (typeof reply.error === 'string') throw new Error(`${this.namespace}: ${String(command.op)} failed: ${reply.error}`);
    return reply;
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/**
 * Network namespaces made by one test, and the processes it starts in them: the single owner of
 * both. close() ends every process (by PID) and removes every namespace, also after a failure.
 */
export class NetnsLab {
  private readonly namespaces: string[] = [];
  private readonly processes: NsProcess[] = [];
  private readonly prefix: string;

  constructor(tag: string) {
    // Namespace names are global to the machine: the PID keeps concurrent runs apart.
    this.prefix = `sg${process.pid}${tag}`;
  }

  /** Creates a namespace with loopback up; returns its full name. */
  add(name: string): string {
    const full = `${this.prefix}-${name}`;
    run('ip', ['netns', 'add', full]);
    this.namespaces.push(full);
    run('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
    return full;
  }

  /** Runs a command inside a namespace and returns its stdout; throws with its stderr on failure. */
  exec(namespace: string, command: string, args: string[], input?: string): string {
    return run('ip', ['netns', 'exec', namespace, command, ...args], input);
  }

  /** `ip` inside a namespace (ip -n NS ...). */
  ip(namespace: string, ...args: string[]): void {
    run('ip', ['-n', namespace, ...args]);
  }

  /** Starts a long-running process inside a namespace; `ip netns exec` execs it, so the PID is the program's. */
  spawn(namespace: string, command: string, args: string[]): NsProcess {
    const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const ns = new NsProcess(namespace, child);
    this.processes.push(ns);
    return ns;
  }

  /** Kills one process by PID and waits for it to be gone. */
  async kill(ns: NsProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!ns.exited) ns.child.kill(signal);
    await waitFor(() => ns.exited, 5000, `${ns.namespace} process ${ns.pid} to exit`);
  }

  async close(): Promise<void> {
    for (const ns of this.processes) if (!ns.exited) ns.child.kill('SIGTERM');
    const deadline = Date.now() + 3000;
    while (this.processes.some((ns) => !ns.exited) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const ns of this.processes) if (!ns.exited) ns.child.kill('SIGKILL');
    // Whatever those started in our namespaces (nginx's workers) goes too, by PID.
    for (const namespace of this.namespaces) {
      const pids = spawnSync('ip', ['netns', 'pids', namespace], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    for (const namespace of this.namespaces.splice(0)) spawnSync('ip', ['netns', 'del', namespace]);
  }
}

function run(command: string, args: string[], input?: string): string {
  const result = spawnSync(command, args, { encoding: 'utf8', input, timeout: 10_000 });
  if (result.error || result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.error?.message}): ${result.stderr}`);
  }
  return result.stdout;
}
