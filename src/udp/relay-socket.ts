import type { RemoteInfo, Socket } from 'node:dgram';
import { nativeLoaded, type RelayReceiver } from '../native/addon.js';
import { NativeRelay } from '../native/udp.js';
import { isIPv4 } from 'node:net';
import { bindUdp, enlargeReceiveBuffer, SHARED_RECEIVE_BUFFER, unmapAddress } from './socket.js';
import type { KernelDrops } from './kernel-drops.js';

export type { RelayReceiver } from '../native/addon.js';

/**
 * An association's own UDP socket, on all addresses and an ephemeral port: the native helper's
 * batched I/O where it is loaded, dgram otherwise. Both behave alike but for `transient`.
 */
export interface RelaySocket {
  readonly port: number;
  /** True for an IPv6 socket that also carries IPv4 (IPv4 peers appear as ::ffff:a.b.c.d). */
  readonly dualStack: boolean;
  /** Datagrams handed to the receiver are valid only during the call: whatever outlives it is copied. */
  readonly transient: boolean;
  receive(receiver: RelayReceiver): void;
  /**
   * Sends header (if any) + payload from byte `offset` on (default 0); null when sent, else the code of
   * the OS's immediate refusal.
   */
  send(header: Buffer | null, payload: Buffer, port: number, address: string, offset?: number): string | null;
  close(): void;
  /** The socket's inode, how /proc/net/udp names it (-1 once closed); the helper's sockets only. */
  readonly inode?: number;
}

/** How relay sockets are made: kernel buffer sizes, and where their kernel drops are counted. */
export interface RelayOptions {
  /** SO_RCVBUF and SO_SNDBUF asked for, in bytes (the kernel caps them at net.core.rmem_max / wmem_max); 0 keeps the kernel's default. */
  readonly receiveBuffer: number;
  readonly sendBuffer: number;
  /**
   * Counts the datagrams the kernel dropped on a full receive queue of the relay sockets made with
   * these options (the opener untracks a socket when it closes it).
   */
  readonly kernelDrops: KernelDrops | null;
}

/** The kernel's defaults, no drop counting: for relays made outside a server (tests, tools). */
export const DEFAULT_RELAY_OPTIONS: RelayOptions = { receiveBuffer: 0, sendBuffer: 0, kernelDrops: null };

/** Asks for the buffer sizes; a kernel that refuses leaves its defaults (the relay works either way). */
function sizeBuffers(socket: Socket, options: RelayOptions): void {
  try {
    if (options.receiveBuffer > 0) socket.setRecvBufferSize(options.receiveBuffer);
    if (options.sendBuffer > 0) socket.setSendBufferSize(options.sendBuffer);
  } catch {
    // EPERM or the like: the default buffers stay.
  }
}

/** The fallback: a dgram socket. Each datagram is its own Buffer. */
class DgramRelay implements RelaySocket {
  readonly transient = false;
  private receiver: RelayReceiver | null = null;

  constructor(
    private readonly socket: Socket,
    readonly port: number,
    readonly dualStack: boolean,
  ) {}

  receive(receiver: RelayReceiver): void {
    this.receiver = receiver;
    this.socket.on('message', (datagram: Buffer, from: RemoteInfo) => receiver.onDatagram(datagram, from.address, from.port));
    this.socket.on('error', (error: NodeJS.ErrnoException) => receiver.onSendError(error.code ?? 'EIO', 1));
  }

  send(header: Buffer | null, payload: Buffer, port: number, address: string, offset = 0): string | null {
    const body = offset === 0 ? payload : payload.subarray(offset);
    try {
      this.socket.send(header === null ? body : [header, body], port, address, this.onSent);
      return null;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code ?? 'EIO';
    }
  }

  private readonly onSent = (error: Error | null): void => {
    if (error) this.receiver?.onSendError((error as NodeJS.ErrnoException).code ?? 'EIO', 1);
  };

  close(): void {
    this.receiver = null;
    this.socket.close();
  }
}

const FALLBACK_CODES = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EINVAL']);

/**
 * A relay socket: dual-stack where the machine has IPv6, IPv4 only otherwise. Its kernel drops are
 * counted in `options.kernelDrops` until the caller untracks its port.
 */
export async function openRelay(options: RelayOptions = DEFAULT_RELAY_OPTIONS): Promise<RelaySocket> {
  const relay = await openSocket(options);
  options.kernelDrops?.track(relay.port);
  return relay;
}

async function openSocket(options: RelayOptions): Promise<RelaySocket> {
  if (nativeLoaded()) {
    try {
      return new NativeRelay(true, options.receiveBuffer, options.sendBuffer);
    } catch (error) {
      if (!FALLBACK_CODES.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
      return new NativeRelay(false, options.receiveBuffer, options.sendBuffer);
    }
  }
  const bound = await bindUdp(0);
  sizeBuffers(bound.socket, options);
  return new DgramRelay(bound.socket, bound.port, bound.dualStack);
}

// Receive buffer of a socket that hears one client of the fixed port (see openClientSocket).
const CLIENT_RECEIVE_BUFFER = 1024 * 1024;

/**
 * On the native helper, in a worker: a socket of the fixed port (`host`, `port`, SO_REUSEPORT as the
 * workers' shared ones) connected to one client's `peerHost`:`peerPort`. The kernel gives that
 * client's datagrams to a connected socket of the group before any unconnected one, so they reach
 * this worker and no sibling has to pass them on. Null on dgram (no SO_REUSEPORT in Node 20).
 * Throws with the errno code (EMFILE…) when it cannot be made.
 */
export function openClientSocket(host: string, port: number, peerHost: string, peerPort: number): RelaySocket | null {
  if (!nativeLoaded()) return null;
  const plain = unmapAddress(host);
  return new NativeRelay(!isIPv4(plain), CLIENT_RECEIVE_BUFFER, 0, { host: plain, port, reusePort: true, peer: { host: peerHost, port: peerPort } });
}

// Send buffer of a shared socket on the helper (its receive buffer: SHARED_RECEIVE_BUFFER, as on dgram).
const SHARED_SEND_BUFFER = 1024 * 1024;

/**
 * A socket shared by many clients on `host` (an IP literal) and `port`: fixed-port mode's, or the
 * steering socket between workers. `workers`: every worker process of the server serves this port.
 * On the native helper each worker then binds its own socket of the port (SO_REUSEPORT; the kernel
 * keeps each sender on one of them); on dgram the cluster primary binds one socket and every worker
 * holds it.
 */
export async function openSharedSocket(host: string, port: number, workers: boolean): Promise<RelaySocket> {
  const plain = unmapAddress(host);
  if (nativeLoaded()) return new NativeRelay(!isIPv4(plain), SHARED_RECEIVE_BUFFER, SHARED_SEND_BUFFER, { host: plain, port, reusePort: workers });
  const bound = await bindUdp(port, plain, workers);
  enlargeReceiveBuffer(bound.socket);
  return new DgramRelay(bound.socket, bound.port, bound.dualStack);
}
