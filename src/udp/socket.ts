import { createSocket, type Socket } from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';

import { unmapAddress } from 'socksgate-client/protocol';

export { unmapAddress };

const MAPPED = '::ffff:';

/**
 * The form a socket of the given family sends to: IPv4 becomes IPv4-mapped on a dual-stack (udp6)
 * socket; null when an IPv4 socket cannot reach an IPv6 address.
 */
export function addressForSocket(ip: string, dualStack: boolean): string | null {
  if (dualStack) return isIPv4(ip) ? MAPPED + ip : ip;
  const plain = unmapAddress(ip);
  return isIPv6(plain) ? null : plain;
}

export interface BoundUdp {
  readonly socket: Socket;
  /** True for a udp6 socket that also carries IPv4 (IPv4 peers appear as ::ffff:a.b.c.d). */
  readonly dualStack: boolean;
  readonly port: number;
}

/**
 * The relay only ever sends to IP literals (names are resolved, and policy-checked, before), so the
 * per-datagram dns.lookup that dgram does by default (a validation and a deferred callback) is skipped.
 */
function literalLookup(address: string, family: number, callback: (error: Error | null, address: string, family: number) => void): void {
  callback(null, address, family);
}

function bind(type: 'udp4' | 'udp6', host: string, port: number, shared: boolean): Promise<BoundUdp> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type, ipv6Only: false, lookup: literalLookup as never });
    socket.once('error', (error) => {
      socket.close();
      reject(error);
    });
    socket.bind({ address: host, port, exclusive: !shared }, () => {
      socket.removeAllListeners('error');
      resolve({ socket, dualStack: type === 'udp6', port: socket.address().port });
    });
  });
}

/**
 * A UDP socket on `host` (all addresses when absent), dual-stack where the machine has IPv6 so
 * IPv4 and IPv6 destinations both work; IPv4 only otherwise. `shared`: in a cluster worker, one
 * socket held by every worker (the primary binds it); otherwise the socket is this process's alone.
 */
export async function bindUdp(port: number, host?: string, shared = false): Promise<BoundUdp> {
  if (host !== undefined) {
    const plain = unmapAddress(host);
    if (isIPv4(plain)) return bind('udp4', plain, port, shared);
    return bind('udp6', plain, port, shared);
  }
  try {
    return await bind('udp6', '::', port, shared);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL' && code !== 'EINVAL') throw error;
    return bind('udp4', '0.0.0.0', port, shared);
  }
}

// Receive buffer for sockets many clients share (fixed port, steering between workers): bursts from
// many clients at once must not overflow it. The kernel caps it at net.core.rmem_max.
const SHARED_RECEIVE_BUFFER = 4 * 1024 * 1024;

/** Asks for a large receive buffer (the default one stays where the kernel refuses). */
export function enlargeReceiveBuffer(socket: Socket): void {
  try {
    socket.setRecvBufferSize(SHARED_RECEIVE_BUFFER);
  } catch {
    // Refused (a hardened kernel): the default buffer stays.
  }
}
