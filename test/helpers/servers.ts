import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { SocksServer, type ServerOptions } from '../../src/server/server.js';
import { waitFor } from './peer.js';

export interface Running<T> {
  readonly value: T;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A socksgate server on `host`:0 (closed by the test). Every target in these tests is on loopback,
 * so loopback destinations are allowed unless the test says otherwise.
 */
export async function startSocks(options: Partial<ServerOptions> = {}, host = '127.0.0.1'): Promise<Running<SocksServer> & { server: SocksServer }> {
  const server = new SocksServer({ listen: [{ host, port: 0 }], allowLoopbackTargets: true, ...options });
  const [bound] = await server.listen();
  return { value: server, server, port: bound!.port, close: () => server.close() };
}

function listenTcp(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => resolve((server.address() as { port: number }).port));
  });
}

function closeTcp(server: Server, sockets: Set<Socket>): Promise<void> {
  for (const s of sockets) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A TCP target that echoes every byte and passes a FIN back (half-close aware). */
export async function startEcho(host = '127.0.0.1'): Promise<Running<Server> & { peers: string[] }> {
  const sockets = new Set<Socket>();
  const peers: string[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    peers.push(`${socket.remoteAddress}:${socket.remotePort}`);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  const port = await listenTcp(server, host);
  return { value: server, port, peers, close: () => closeTcp(server, sockets) };
}

/** A TCP target that answers each connection with `respond(everything it received)` after the client's FIN. */
export async function startCollector(respond: (received: Buffer) => Buffer, host = '127.0.0.1'): Promise<Running<Server>> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => socket.end(respond(Buffer.concat(chunks))));
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  });
  const port = await listenTcp(server, host);
  return { value: server, port, close: () => closeTcp(server, sockets) };
}

/** Fails with the install command when a third-party program the test needs is missing. */
export function requireProgram(program: string, debianPackage: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || path === '') {
    throw new Error(`${program} is not installed; install it with: apt-get install -y ${debianPackage}`);
  }
  return path;
}

/** A port free for both TCP and UDP on 127.0.0.1 right now (dnsmasq binds both; so does a fixed-port proxy). */
export async function freeTcpUdpPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const tcp = createServer();
    const port = await listenTcp(tcp, '127.0.0.1');
    const udp = createSocket('udp4');
    const free = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    if (free) return port;
  }
  throw new Error('no port free for both TCP and UDP after 20 tries');
}

/**
 * dnsmasq on 127.0.0.1 answering only for `records` (name → address); everything else fails.
 * It has no upstream, so nothing leaves the machine.
 */
export async function startDnsmasq(records: Record<string, string[]>): Promise<Running<ChildProcess> & { server: string }> {
  // Another test may take the port between our probe and dnsmasq's bind: try again with a new one.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDnsmasqOnce(records);
    } catch (error) {
      if (attempt >= 5 || !/Address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function startDnsmasqOnce(records: Record<string, string[]>): Promise<Running<ChildProcess> & { server: string }> {
  const binary = requireProgram('dnsmasq', 'dnsmasq-base');
  const port = await freeTcpUdpPort();
  const args = [
    '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-daemon', '--listen-address=127.0.0.1', '--bind-interfaces',
    `--port=${port}`, '--user=root', '--pid-file', '--local-ttl=60', '--log-facility=-',
  ];
  for (const [name, addresses] of Object.entries(records)) {
    for (const address of addresses) args.push(`--host-record=${name},${address}`);
  }
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const closed = new Promise((resolve) => child.once('close', resolve));
  const resolver = new Resolver({ timeout: 200, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  const first = Object.keys(records)[0];
  let ready = false;
  const deadline = Date.now() + 5000;
  while (!ready && Date.now() < deadline && child.exitCode === null) {
    try {
      if (first) await resolver.resolve(first);
      else await resolver.resolve4('absent.test').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ETIMEOUT' || e.code === 'ECONNREFUSED') throw e;
      });
      ready = true;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  if (!ready) {
    if (child.exitCode === null) child.kill('SIGKILL');
    await closed;
    throw new Error(`dnsmasq did not answer on 127.0.0.1:${port}: ${stderr}`);
  }
  return {
    value: child,
    port,
    server: `127.0.0.1:${port}`,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      // dnsmasq waits for its TCP children; do not let one stuck query hold the test up.
      const exited = await waitFor(() => child.exitCode !== null || child.signalCode !== null, 3000, 'dnsmasq to exit').then(() => true, () => false);
      if (!exited) {
        child.kill('SIGKILL');
        await waitFor(() => child.exitCode !== null || child.signalCode !== null, 3000, 'dnsmasq to be killed');
      }
    },
  };
}

const BLACKHOLE = `
import socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
filler = socket.create_connection(s.getsockname())
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

/**
 * A TCP port whose accept queue is full and never drained: new SYNs are dropped, so connecting
 * to it times out (a real unresponsive host, on loopback).
 */
export async function startBlackhole(): Promise<Running<ChildProcess>> {
  const python = requireProgram('python3', 'python3');
  const child = spawn(python, ['-c', BLACKHOLE], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (line: Buffer) => resolve(Number(line.toString().trim())));
    child.once('exit', (code) => reject(new Error(`blackhole helper exited with ${code}`)));
  });
  return {
    value: child,
    port,
    close: async () => {
      child.stdin!.end();
      await waitFor(() => child.exitCode !== null || child.signalCode !== null, 3000, 'the blackhole helper to exit');
    },
  };
}

/**
 * Dante (danted, from Debian's dante-server) on 127.0.0.1 serving CONNECT, BIND and UDP ASSOCIATE
 * without authentication, in the foreground, with a generated config.
 */
/** Dante serving CONNECT, BIND and UDP ASSOCIATE on 127.0.0.1:port without auth (see ../shared/INTEROP.md). */
export function danteConfig(port: number): string {
  return [
    'logoutput: stderr',
    `internal: 127.0.0.1 port = ${port}`,
    'external: 127.0.0.1',
    'socksmethod: none',
    'clientmethod: none',
    'user.privileged: root',
    'user.unprivileged: nobody',
    'client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }',
    'socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: bind connect udpassociate }',
    'socks pass { from: 0.0.0.0/0 to: 127.0.0.0/8 command: bindreply udpreply }',
    '',
  ].join('\n');
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/**
 * Starts a third-party server and waits until it accepts on 127.0.0.1:port (its output in the error
 * when it does not); close() ends it and runs `cleanup` (its config folder).
 */
export async function startListening(name: string, binary: string, args: string[], port: number, cleanup: () => Promise<void> = async () => {}): Promise<Running<ChildProcess>> {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const deadline = Date.now() + 15_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await cleanup();
      throw new Error(`${name} did not start on 127.0.0.1:${port}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    value: child,
    port,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await waitFor(() => child.exitCode !== null || child.signalCode !== null, 5000, `${name} to exit`);
      }
      await cleanup();
    },
  };
}

export async function startDante(): Promise<Running<ChildProcess>> {
  const binary = requireProgram('danted', 'dante-server');
  const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'socksgate-dante-'));
  const port = await freeTcpUdpPort();
  await writeFile(join(dir, 'danted.conf'), danteConfig(port));
  return startListening('danted', binary, ['-f', join(dir, 'danted.conf'), '-p', join(dir, 'danted.pid')], port, () => rm(dir, { recursive: true, force: true }));
}

/** A TCP target that counts the bytes it receives; close() destroys its connections and stops it. */
export async function startTcpSink(): Promise<{ port: number; received: () => number; close: () => Promise<void> }> {
  let received = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    received: () => received,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
