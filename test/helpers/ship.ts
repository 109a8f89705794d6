// What the tests of the shipped forms (npm tarball, container image, systemd unit, Kubernetes) share:
// a program whose JSON log lines are read as they come, and one CONNECT and one UDP round trip
// through a running socksgate, checked byte for byte.
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { Peer } from './peer.js';
import { startEcho } from './servers.js';
import { handshake, readReply, request } from './socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from './udp.js';

export interface RunningProgram {
  /** Parsed JSON lines of standard output (other lines as { text }). */
  readonly lines: Array<Record<string, unknown>>;
  readonly pid: number;
  stderr: string;
  exitCode: number | null;
  waitForLine(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (signals as 128+n). */
  exited(timeoutMs?: number): Promise<number>;
  kill(signal?: NodeJS.Signals): void;
}

export function startProgram(command: string, args: string[], options: SpawnOptions = {}): RunningProgram {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  const changed = new Set<() => void>();
  let pending = '';
  const running: RunningProgram = {
    lines,
    pid: child.pid ?? -1,
    stderr: '',
    exitCode: null,
    waitForLine(match, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`no matching line from ${command} within ${timeoutMs} ms; lines: ${JSON.stringify(lines)}; stderr: ${running.stderr}`)), timeoutMs);
        const check = (): void => {
          const found = lines.find(match);
          if (found) done(null, found);
          else if (running.exitCode !== null) done(new Error(`${command} exited with ${running.exitCode}; lines: ${JSON.stringify(lines)}; stderr: ${running.stderr}`));
        };
        const done = (error: Error | null, line?: Record<string, unknown>): void => {
          clearTimeout(timer);
          changed.delete(check);
          if (error) reject(error);
          else resolve(line!);
        };
        changed.add(check);
        check();
      });
    },
    exited(timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        if (running.exitCode !== null) return resolve(running.exitCode);
        const timer = setTimeout(() => reject(new Error(`${command} did not exit within ${timeoutMs} ms`)), timeoutMs);
        child.once('close', () => {
          clearTimeout(timer);
          resolve(running.exitCode!);
        });
      });
    },
    kill(signal = 'SIGTERM') {
      if (running.exitCode === null) child.kill(signal);
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
    for (const check of [...changed]) check();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    running.stderr += chunk.toString();
  });
  child.on('close', (code, signal) => {
    running.exitCode = code ?? 128 + (signal === 'SIGTERM' ? 15 : signal === 'SIGKILL' ? 9 : 1);
    for (const check of [...changed]) check();
  });
  child.on('error', (error) => {
    running.stderr += `${error.message}\n`;
    running.exitCode = 127;
    for (const check of [...changed]) check();
  });
  return running;
}

/** Runs a command to its end; throws with its output when it fails. */
export function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): string {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: 'utf8',
    input: options.input ?? '',
    timeout: options.timeoutMs ?? 300_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal ?? result.error?.message}\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/** A CONNECT through the proxy to a TCP echo on loopback: 64 KiB there and back, byte for byte. */
export async function connectRoundTrip(socksPort: number, credentials?: { user: string; pass: string }): Promise<void> {
  const echo = await startEcho();
  try {
    const peer = await Peer.connect(socksPort);
    await handshake(peer, credentials);
    peer.write(request(1, '127.0.0.1', echo.port));
    const reply = await readReply(peer, 10_000);
    assert.equal(reply.code, 0, 'CONNECT succeeded');
    const payload = Buffer.alloc(65_536);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
    peer.write(payload);
    const back = await peer.read(payload.length, 10_000);
    assert.ok(back.equals(payload), 'the echo came back byte for byte');
    peer.socket.destroy();
  } finally {
    await echo.close();
  }
}

/** A UDP ASSOCIATE and one datagram to a UDP echo on loopback and back, byte for byte. */
export async function udpRoundTrip(socksPort: number, credentials?: { user: string; pass: string }): Promise<void> {
  const echo = await startUdpEcho();
  const association = await openAssociation(socksPort, credentials ? { credentials } : {});
  try {
    assert.equal(association.reply.code, 0, 'UDP ASSOCIATE succeeded');
    // Datagrams go where the reply says: only ever to this machine.
    assert.equal(association.reply.host, '127.0.0.1', 'the relay address (BND.ADDR) is on loopback');
    const payload = Buffer.from(`udp round trip ${socksPort}`);
    let answer: Buffer | null = null;
    let sent = 0;
    // UDP may be lost even on loopback: up to 5 tries, each waiting for the echo.
    for (let attempt = 0; attempt < 5 && answer === null; attempt++) {
      await association.sendTo('127.0.0.1', echo.port, payload);
      sent++;
      answer = await association.udp.receive(2000).then((d) => d.data, () => null);
    }
    assert.ok(answer, 'an answer came back through the relay');
    const unwrapped = unwrap(answer);
    assert.equal(unwrapped.host, '127.0.0.1');
    assert.equal(unwrapped.port, echo.port);
    assert.ok(unwrapped.data.equals(payload), 'the datagram came back byte for byte');
    assert.ok(echo.received() >= 1 && echo.received() <= sent, `the echo heard ${echo.received()} of ${sent} sent`);
  } finally {
    association.close();
    echo.close();
  }
}

/** GET http://127.0.0.1:port/path as JSON. */
export function getJson(port: number, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: { text } });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}
