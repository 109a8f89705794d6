import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The CLI of this build (build/src/cli.js next to build/test/). */
export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface RunningCli {
  readonly child: ChildProcess;
  /** Parsed JSON log lines so far. */
  readonly lines: Array<Record<string, unknown>>;
  stderr: string;
  /** Resolves with the first log line that satisfies `match`. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (signals as 128+n). */
  exited(timeoutMs?: number): Promise<number>;
  /** SIGTERM, then the exit code; throws (with the output) if it had already exited with an error by itself. */
  stop(): Promise<number>;
  /** The last log lines and stderr, for an assertion's message. */
  output(): string;
}

export function startCli(args: string[], input?: string): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let pending = '';
  let exitCode: number | null = null;
  const running: RunningCli = {
    child,
    lines,
    stderr: '',
    waitForLine(match, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(match);
          if (found) {
            finish();
            resolve(found);
          } else if (exitCode !== null) {
            finish();
            reject(new Error(`socksgate exited with ${exitCode} before the expected log line; stderr: ${running.stderr}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no matching log line within ${timeoutMs} ms; got ${JSON.stringify(lines)}; stderr: ${running.stderr}`));
        }, timeoutMs);
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    exited(timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        if (exitCode !== null) return resolve(exitCode);
        const timer = setTimeout(() => reject(new Error(`socksgate did not exit within ${timeoutMs} ms; ${running.output()}`)), timeoutMs);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve(exitCode!);
        });
      });
    },
    async stop() {
      // A server that had already exited by itself (say, at start-up) did not exit on SIGTERM: say so
      // with its output, instead of an exit code that reads like a failed shutdown.
      // (137: SIGKILL, which only a test sends, to kill an instance on purpose.)
      if (exitCode !== null && exitCode !== 0 && exitCode !== 137) throw new Error(`socksgate had already exited with ${exitCode} before it was stopped; ${running.output()}`);
      if (exitCode === null) child.kill('SIGTERM');
      return running.exited();
    },
    output() {
      return `last log lines: ${lines.slice(-5).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${running.stderr}`;
    },
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const text = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        lines.push({ text });
      }
    }
    for (const w of [...waiters]) w();
  });
  child.stderr!.on('data', (chunk: Buffer) => (running.stderr += chunk.toString()));
  child.on('exit', (code, signal) => {
    exitCode = code ?? 128 + (signal === 'SIGTERM' ? 15 : signal === 'SIGKILL' ? 9 : 1);
    for (const w of [...waiters]) w();
  });
  if (input !== undefined) child.stdin!.end(input);
  return running;
}

/** The ports of a "listening on" line: { '127.0.0.1': 41234, '::1': 41235 }. */
export function listenPorts(line: Record<string, unknown>): Map<string, number> {
  const out = new Map<string, number>();
  for (const where of line.listen as string[]) {
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(where)!;
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}
