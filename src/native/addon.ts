// The optional native helper (native/): batched UDP I/O for relay sockets and TCP byte moving for the
// server (accept, read, write, connect, tunnels). It never interprets SOCKS bytes; the TypeScript
// code decides everything. Loaded when it was built (npm install builds it where a compiler is
// present); otherwise the pure TypeScript paths run. SOCKSGATE_NATIVE=0 turns it off,
// SOCKSGATE_NATIVE=1 makes its absence an error. Each thread that loads it (main or worker) has its
// own instance of the helper's state.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What a relay socket hands its datagrams and late send failures to. */
export interface RelayReceiver {
  /** A datagram from address:port. With a transient socket `datagram` is valid only during the call. */
  onDatagram(datagram: Buffer, address: string, port: number): void;
  /** Sends the OS refused after they were accepted (`count` of them, the last with `code`). */
  onSendError(code: string, count: number): void;
  /** The socket can no longer be read (it could not be watched again after an error). */
  onSocketFailed?(reason: string): void;
}

/** What the helper's callbacks reach (each native object's owner). */
export interface UdpOwner {
  deliver(count: number): void;
  onError(code: string, count: number): void;
}
export interface ListenerOwner {
  /**
   * A connection the helper accepted, with the `length` bytes that came with it (at the start of the
   * connection arena); returns its owner, or null to close it.
   */
  accepted(conn: unknown, host: string, port: number, length: number): ConnOwner | null;
}
export interface ConnOwner {
  /** `length` bytes at the start of the connection arena, or the end (`reason`: 'end' for the peer's FIN, else an errno code). */
  onData(length: number, reason: string | null): void;
  /** An outbound connection is up (code null, with its local address) or failed (code). */
  onConnected(code: string | null, host: string | null, port: number): void;
}
export interface TunnelOwner {
  /** The tunnel ended by itself (and closes once this returns), with the bytes it moved each way. */
  ended(reason: string, up: number, down: number): void;
}

/** The helper's functions (native/*.c; see their header comments). */
export interface Addon {
  setup(callbacks: {
    udpDispatch(owner: UdpOwner, count: number): void;
    udpError(owner: UdpOwner, code: string, count: number): void;
    accept(owner: ListenerOwner, conn: unknown, host: string, port: number, length: number): ConnOwner | null;
    data(owner: ConnOwner, length: number, reason: string | null): void;
    connected(owner: ConnOwner, code: string | null, host: string | null, port: number): void;
    tunnelEnd(owner: TunnelOwner, reason: string, up: number, down: number): void;
  }): void;
  udpArena(): { arena: ArrayBuffer; meta: ArrayBuffer; batch: number; slot: number };
  /**
   * Buffer sizes in bytes (0: the kernel's default); host: an IP literal of the family (null: all
   * addresses); port 0: an ephemeral one; reusePort: SO_REUSEPORT (each worker its own socket of one port).
   */
  udpBind(owner: UdpOwner, ipv6: boolean, receiveBuffer?: number, sendBuffer?: number, host?: string | null, port?: number, reusePort?: boolean, peerHost?: string | null, peerPort?: number): [unknown, number];
  /** Sends header + payload[offset..]; 0 or -errno. */
  udpSend(handle: unknown, header: Buffer | null, payload: Buffer, port: number, address: string, offset: number): number;
  udpNtop(index: number): string;
  udpClose(handle: unknown): void;
  udpBusyPoll(microseconds: number): void;
  udpCounters(): [number, number];
  udpInode(handle: unknown): number;
  connArena(): ArrayBuffer;
  listen(owner: ListenerOwner, fd: number): unknown;
  listenClose(listener: unknown): void;
  connAdopt(owner: ConnOwner, fd: number, nonBlocking?: boolean): unknown;
  connConnect(owner: ConnOwner, host: string, port: number, timeoutMs: number): unknown;
  connWrite(conn: unknown, bytes: Buffer): string | null;
  connRead(conn: unknown, on: boolean): void;
  connEnd(conn: unknown, lingerMs: number): void;
  connTake(conn: unknown): [number, Buffer | null] | null;
  connClose(conn: unknown): void;
  connLocal(conn: unknown): [string, number];
  connKeepAlive(conn: unknown, ms: number): void;
  tunnelOpen(owner: TunnelOwner, client: unknown, target: unknown, toTarget: Buffer | null, clientEnded: boolean, toClient?: Buffer | null): unknown;
  tunnelFromSockets(owner: TunnelOwner, clientFd: number, targetFd: number, toTarget: Buffer | null, clientEnded: boolean): unknown;
  tunnelInfo(tunnel: unknown): [number, number, number];
  tunnelClose(tunnel: unknown): void;
}

/** The package's native/ folder (dist/native/ in a package, build/src/native/ in tests, two or three levels up). */
function nativeDir(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'native', 'binding.gyp'))) return join(dir, 'native');
    dir = dirname(dir);
  }
  return null;
}

/**
 * The addon's file as node-gyp-build finds it: a local build (native/build/Release, made by npm install
 * where no prebuild loads, or by `npm rebuild --build-from-source`) first, else the prebuild in
 * native/prebuilds/ for this platform. Otherwise why not: the install hook's build error when it
 * left one (native/build-error.txt), else what is missing.
 */
function findAddon(): { path: string } | { missing: string } {
  const dir = nativeDir();
  if (dir === null) return { missing: 'not found (the package has no native/binding.gyp)' };
  try {
    return { path: (createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string }).path(dir) };
  } catch (error) {
    const failed = join(dir, 'build-error.txt');
    if (existsSync(failed)) return { missing: `not built: ${readFileSync(failed, 'utf8').trim()}` };
    const first = (error as Error).message.split('\n')[0]!.replace(/^No native build was found for /, '');
    return {
      missing: `not built: no local build in native/build and no prebuild in native/prebuilds for ${first} (npm install builds it with python3, make and a C compiler; then \`npm rebuild socksgate\`)`,
    };
  }
}

// Every callback of the helper goes to a method of the object it was given as the owner.
const CALLBACKS: Parameters<Addon['setup']>[0] = {
  udpDispatch: (owner, count) => owner.deliver(count),
  udpError: (owner, code, count) => owner.onError(code, count),
  accept: (owner, conn, host, port, length) => owner.accepted(conn, host, port, length),
  data: (owner, length, reason) => owner.onData(length, reason),
  connected: (owner, code, host, port) => owner.onConnected(code, host, port),
  tunnelEnd: (owner, reason, up, down) => owner.ended(reason, up, down),
};

function load(): { loaded: Addon | null; reason: string } {
  const wanted = process.env.SOCKSGATE_NATIVE;
  if (wanted === '0') return { loaded: null, reason: 'turned off by SOCKSGATE_NATIVE=0' };
  let reason: string;
  if (process.platform !== 'linux') reason = 'only built on Linux';
  else {
    // SOCKSGATE_NATIVE_ADDON: another build of the helper (the sanitizer pass of npm test uses it).
    const override = process.env.SOCKSGATE_NATIVE_ADDON;
    const found = override ? { path: override } : findAddon();
    if ('missing' in found) reason = found.missing;
    else {
      const path = found.path;
      try {
        const addon = createRequire(import.meta.url)(path) as Addon;
        addon.setup(CALLBACKS);
        return { loaded: addon, reason: 'loaded' };
      } catch (error) {
        reason = `failed to load ${path}: ${(error as Error).message}`;
      }
    }
  }
  if (wanted === '1') throw new Error(`SOCKSGATE_NATIVE=1 but the native helper is ${reason}; build it with \`npm rebuild\` or unset SOCKSGATE_NATIVE`);
  return { loaded: null, reason };
}

let native: { loaded: Addon | null; reason: string } | null = null;

/** The helper, loaded on first use; null where it is not built, not Linux, or turned off. */
export function nativeAddon(): Addon | null {
  native ??= load();
  return native.loaded;
}

/**
 * Which UDP I/O the relay sockets use, for logs and the status page. The helper is loaded on the
 * first call (a client of the library never loads it).
 */
export function udpIo(): { readonly native: boolean; readonly description: string } {
  const loaded = nativeLoaded();
  return {
    native: loaded,
    description: loaded ? 'native (recvmmsg/sendmmsg batches, UDP GSO; TCP accept and tunnels by read/write)' : `dgram (native helper ${native!.reason})`,
  };
}

/**
 * Adaptive busy polling of the native relay sockets, process-wide: after a batch, a socket that was
 * the only one ready is read again for up to this many microseconds of quiet before the process
 * sleeps (anything else becoming ready ends it at once). 0 turns it off. No effect on dgram.
 */
export function setBusyPoll(microseconds: number): void {
  nativeAddon()?.udpBusyPoll(microseconds);
}

/**
 * Datagrams the native relay sockets of this process sent grouped by UDP GSO (several datagrams to
 * one destination through the IP stack at once), and the messages that carried them; zeros on dgram.
 */
export function gsoCounters(): { messages: number; datagrams: number } {
  const addon = nativeAddon();
  if (addon === null) return { messages: 0, datagrams: 0 };
  const [messages, datagrams] = addon.udpCounters();
  return { messages, datagrams };
}

/** Whether the helper is loaded (it is loaded, or found missing, on the first call). */
export function nativeLoaded(): boolean {
  return nativeAddon() !== null;
}

const ERRNO = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** "ECONNRESET"… for an errno number. */
export function errnoCode(errno: number): string {
  return ERRNO.get(errno) ?? `errno ${errno}`;
}

