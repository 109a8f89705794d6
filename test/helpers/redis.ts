import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freeTcpUdpPort } from './servers.js';

export interface RunningRedis {
  readonly port: number;
  readonly url: string;
  /** The server's process id (it is stopped by this id only). */
  readonly pid: () => number;
  /** Stops the server (SIGTERM by PID) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (after stop()). */
  start(): Promise<void>;
  /** Sends one command (inline protocol) and resolves with the raw reply. */
  command(line: string): Promise<string>;
}

/** redis-server from Debian on a free loopback port, nothing saved to disk; fails with the install command when missing. */
export async function startRedis(): Promise<RunningRedis> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) throw new Error('redis-server is not installed; install it with: apt-get install -y redis-server');
  let port = 0;
  let child: ChildProcess | null = null;
  let output = '';
  const start = async (): Promise<void> => {
    output = '';
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    // Ready once it answers as itself (bounded: 200 tries, 25 ms apart): two test files may pick the same
    // free port, and the server of the other one must not pass for this one.
    for (let i = 0; i < 200; i++) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${output}`);
      if ((await redisCommand(port, 'INFO server').catch(() => '')).includes(`process_id:${proc.pid}\r\n`)) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`redis-server did not answer on port ${port}: ${output}`);
  };
  // A port taken by another test's server between the pick and the bind: pick another (bounded).
  for (let attempt = 1; ; attempt++) {
    port = await freeTcpUdpPort();
    try {
      await start();
      break;
    } catch (error) {
      const proc = child as ChildProcess | null;
      if (proc?.exitCode === null && proc.pid !== undefined) process.kill(proc.pid, 'SIGKILL');
      if (attempt === 5) throw error;
    }
  }
  return {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    pid: () => child?.pid ?? 0,
    async stop() {
      const proc = child;
      child = null;
      if (!proc || proc.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      process.kill(proc.pid!, 'SIGTERM');
      await exited;
    },
    start,
    command: (line) => redisCommand(port, line),
  };
}

/** One inline command on a connection of its own; the reply as far as the first read got it. */
export function redisCommand(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(2000, () => socket.destroy(new Error('redis did not answer within 2 s')));
    socket.once('error', reject);
    socket.once('connect', () => socket.write(`${line}\r\n`));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString());
    });
  });
}
