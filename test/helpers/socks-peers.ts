// Third-party SOCKS5 servers from Debian, started on loopback with generated configs, for the
// client library's interop tests: microsocks (TCP only) and v2ray's SOCKS inbound. Dante is in
// servers.ts. Each fails with the install command when its program is missing.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './peer.js';
import { freeTcpUdpPort, requireProgram, type Running } from './servers.js';

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

async function startListening(name: string, binary: string, args: string[], port: number, cleanup: () => Promise<void> = async () => {}): Promise<Running<ChildProcess>> {
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

/** microsocks on 127.0.0.1: CONNECT only, no authentication. */
export async function startMicrosocks(): Promise<Running<ChildProcess>> {
  const binary = requireProgram('microsocks', 'microsocks');
  const port = await freeTcpUdpPort();
  return startListening('microsocks', binary, ['-i', '127.0.0.1', '-p', String(port)], port);
}

/** v2ray with one SOCKS inbound on 127.0.0.1 (no authentication, UDP on) and a direct outbound. */
export async function startV2ray(): Promise<Running<ChildProcess>> {
  const binary = requireProgram('v2ray', 'v2ray');
  const port = await freeTcpUdpPort();
  const dir = await mkdtemp(join(tmpdir(), 'socksgate-v2ray-'));
  const config = {
    log: { loglevel: 'warning' },
    inbounds: [{ listen: '127.0.0.1', port, protocol: 'socks', settings: { auth: 'noauth', udp: true, ip: '127.0.0.1' } }],
    outbounds: [{ protocol: 'freedom', settings: {} }],
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return startListening('v2ray', binary, ['-config', join(dir, 'config.json')], port, () => rm(dir, { recursive: true, force: true }));
}
