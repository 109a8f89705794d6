// Third-party SOCKS5 servers from Debian, started on loopback with generated configs, for the
// client library's interop tests: microsocks (TCP only) and v2ray's SOCKS inbound. Dante is in
// servers.ts. Each fails with the install command when its program is missing.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpUdpPort, requireProgram, startListening, type Running } from './servers.js';

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
