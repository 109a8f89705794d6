// The optional native helper for relay sockets (native/udp-relay.c): batched recvmmsg/sendmmsg.
// Loaded when it was built (npm install builds it where a compiler is present); otherwise the relay
// uses dgram. SOCKSGATE_NATIVE=0 turns it off, SOCKSGATE_NATIVE=1 makes its absence an error.
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
}

interface Addon {
  setup(dispatch: (owner: NativeRelay, count: number) => void, onError: (owner: NativeRelay, code: string, count: number) => void): {
    arena: ArrayBuffer;
    meta: ArrayBuffer;
    batch: number;
    slot: number;
  };
  bind(owner: NativeRelay, ipv6: boolean): [unknown, number];
  /** Sends header + payload[offset..]; 0 or -errno. */
  send(handle: unknown, header: Buffer | null, payload: Buffer, port: number, address: string, offset: number): number;
  ntop(index: number): string;
  close(handle: unknown): void;
  busyPoll(microseconds: number): void;
  counters(): [number, number];
  tcpSetup(onEnd: (owner: { ended(reason: string): void }, reason: string) => void): void;
  tcpStart(
    owner: { ended(reason: string): void },
    clientFd: number,
    targetFd: number,
    toTarget: Buffer | null,
    toClient: Buffer | null,
    clientEnded: boolean,
    adopt?: boolean,
  ): unknown;
  tcpInfo(handle: unknown): [number, number, number];
  tcpClose(handle: unknown): void;
  watchStart(owner: { ended(reason: string): void }, fd: number): unknown;
  watchClose(handle: unknown): void;
  frontSetup(
    onHandoff: (owner: FrontOwner, fd: number, bytes: Buffer, greeted: boolean, elapsedMs: number) => void,
    onRequest: (owner: FrontOwner, conn: unknown, clientHost: string, clientPort: number, host: string, port: number) => void,
    onConnected: (session: FrontSessionOwner, clientFd: number, targetFd: number, boundHost: string, boundPort: number) => boolean,
    onFailed: (session: FrontSessionOwner, code: string) => void,
    onAccepted: (owner: FrontOwner) => void,
  ): void;
  frontCreate(owner: FrontOwner, open: boolean, handoffMs: number): unknown;
  /** Accepts on a duplicate of listening descriptor fd from now on; false when it cannot. */
  frontListen(front: unknown, fd: number): boolean;
  frontAdopt(front: unknown, fd: number): boolean;
  frontSetOpen(front: unknown, open: boolean): void;
  frontClose(front: unknown): void;
  frontConnect(conn: unknown, session: FrontSessionOwner, host: string, port: number, timeoutMs: number): string | null;
  frontReply(conn: unknown, code: number): void;
  frontAbort(conn: unknown): void;
  frontTake(conn: unknown): number;
}

/** What the native front door (native/tcp-front.c) reports a listener's connections to. */
export interface FrontOwner {
  /** The helper accepted a connection on the listener itself. */
  accepted(): void;
  handoff(fd: number, bytes: Buffer, greeted: boolean, elapsedMs: number): void;
  request(conn: unknown, clientHost: string, clientPort: number, host: string, port: number): void;
}

/** What it reports a session's connect to. */
export interface FrontSessionOwner {
  /** True when it took both descriptors (the helper then leaves them open). */
  connected(clientFd: number, targetFd: number, boundHost: string, boundPort: number): boolean;
  connectFailed(code: string): void;
}

/** The front-door half of the native helper, set up on first use; null without the helper. */
export type NativeFrontApi = Pick<Addon, 'frontCreate' | 'frontListen' | 'frontAdopt' | 'frontSetOpen' | 'frontClose' | 'frontConnect' | 'frontReply' | 'frontAbort' | 'frontTake'>;
let front: NativeFrontApi | null | undefined;

export function nativeFrontApi(): NativeFrontApi | null {
  if (front !== undefined) return front;
  const addon = nativeTcp() === null ? null : native!.loaded!.addon;
  addon?.frontSetup(
    (owner, fd, bytes, greeted, elapsedMs) => owner.handoff(fd, bytes, greeted, elapsedMs),
    (owner, conn, clientHost, clientPort, host, port) => owner.request(conn, clientHost, clientPort, host, port),
    (session, clientFd, targetFd, boundHost, boundPort) => session.connected(clientFd, targetFd, boundHost, boundPort),
    (session, code) => session.connectFailed(code),
    (owner) => owner.accepted(),
  );
  front = addon;
  return front;
}

/** The TCP half of the native helper (native/tcp-relay.c), set up on first use; null without the helper. */
export type NativeTcp = Pick<Addon, 'tcpStart' | 'tcpInfo' | 'tcpClose' | 'watchStart' | 'watchClose'>;
let tcp: NativeTcp | null | undefined;

export function nativeTcp(): NativeTcp | null {
  if (tcp !== undefined) return tcp;
  native ??= load();
  const addon = native.loaded?.addon;
  if (addon) addon.tcpSetup((owner, reason) => owner.ended(reason));
  tcp = addon ?? null;
  return tcp;
}

// Words per datagram in the metadata array: length, port, family, unused, then 4 address words.
const META_WORDS = 8;
/** Per arena slot, the last two views handed out, the most recent first (see NativeRelay.deliver). */
const recent: (Buffer | undefined)[] = [];
const earlier: (Buffer | undefined)[] = [];

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

interface Loaded {
  addon: Addon;
  arena: Buffer;
  meta: Int32Array;
  slot: number;
}

function load(): { loaded: Loaded | null; reason: string } {
  const wanted = process.env.SOCKSGATE_NATIVE;
  if (wanted === '0') return { loaded: null, reason: 'turned off by SOCKSGATE_NATIVE=0' };
  let reason: string;
  if (process.platform !== 'linux') reason = 'only built on Linux';
  else {
    const found = findAddon();
    if ('missing' in found) reason = found.missing;
    else {
      const path = found.path;
      try {
        const addon = createRequire(import.meta.url)(path) as Addon;
        const shared = addon.setup(
          (owner, count) => owner.deliver(count),
          (owner, code, count) => owner.receiver?.onSendError(code, count),
        );
        return { loaded: { addon, arena: Buffer.from(shared.arena), meta: new Int32Array(shared.meta), slot: shared.slot }, reason: 'loaded' };
      } catch (error) {
        reason = `failed to load ${path}: ${(error as Error).message}`;
      }
    }
  }
  if (wanted === '1') throw new Error(`SOCKSGATE_NATIVE=1 but the native UDP helper is ${reason}; build it with \`npm rebuild\` or unset SOCKSGATE_NATIVE`);
  return { loaded: null, reason };
}

let native: { loaded: Loaded | null; reason: string } | null = null;

/**
 * Which UDP I/O the relay sockets use, for logs and the status page. The helper is loaded on the
 * first call (a client of the library never loads it).
 */
export function udpIo(): { readonly native: boolean; readonly description: string } {
  const loaded = nativeLoaded();
  return {
    native: loaded,
    description: loaded ? 'native (recvmmsg/sendmmsg batches, UDP GSO; TCP tunnels by read/write)' : `dgram (native helper ${native!.reason})`,
  };
}

/**
 * Adaptive busy polling of the native relay sockets, process-wide: after a batch, a socket that was
 * the only one ready is read again for up to this many microseconds of quiet before the process
 * sleeps (anything else becoming ready ends it at once). 0 turns it off. No effect on dgram.
 */
export function setBusyPoll(microseconds: number): void {
  if (nativeLoaded()) native!.loaded!.addon.busyPoll(microseconds);
}

/**
 * Datagrams the native relay sockets of this process sent grouped by UDP GSO (several datagrams to
 * one destination through the IP stack at once), and the messages that carried them; zeros on dgram.
 */
export function gsoCounters(): { messages: number; datagrams: number } {
  if (!nativeLoaded()) return { messages: 0, datagrams: 0 };
  const [messages, datagrams] = native!.loaded!.addon.counters();
  return { messages, datagrams };
}

/** Whether the helper is loaded (it is loaded, or found missing, on the first call). */
export function nativeLoaded(): boolean {
  native ??= load();
  return native.loaded !== null;
}

/**
 * A relay socket on the native helper. Datagrams arrive in batches; each is a view of the shared
 * arena, valid until the handler returns (the socket is `transient`).
 */
export class NativeRelay {
  get transient(): boolean {
    return true;
  }

  receiver: RelayReceiver | null = null;
  readonly port: number;
  readonly dualStack: boolean;
  private handle: unknown;
  private closed = false;
  // The last sender's address words and its text, so a steady peer costs no string per datagram.
  private family = 0;
  private w0 = 0;
  private w1 = 0;
  private w2 = 0;
  private w3 = 0;
  private lastAddress = '';

  /** Throws an Error with the errno code (EADDRINUSE, EAFNOSUPPORT, EMFILE…) when it cannot bind. */
  constructor(ipv6: boolean) {
    const [handle, port] = native!.loaded!.addon.bind(this, ipv6);
    this.handle = handle;
    this.port = port;
    this.dualStack = ipv6;
  }

  receive(receiver: RelayReceiver): void {
    this.receiver = receiver;
  }

  /**
   * Sends header + payload from its byte `offset` on. Null when sent (or queued for the batch's
   * sendmmsg), else the code of the OS's refusal.
   */
  send(header: Buffer | null, payload: Buffer, port: number, address: string, offset = 0): string | null {
    if (this.closed) return 'EBADF';
    const rc = native!.loaded!.addon.send(this.handle, header, payload, port, address, offset);
    return rc === 0 ? null : errnoCode(-rc);
  }

  /** Called by the helper with `count` datagrams in the arena. */
  deliver(count: number): void {
    const { arena, meta, slot, addon } = native!.loaded!;
    const receiver = this.receiver;
    if (receiver === null) return;
    for (let i = 0; i < count && !this.closed; i++) {
      const m = i * META_WORDS;
      let address: string;
      if (meta[m + 4] === this.w0 && meta[m + 5] === this.w1 && meta[m + 6] === this.w2 && meta[m + 7] === this.w3 && meta[m + 2] === this.family) {
        address = this.lastAddress;
      } else {
        address = addon.ntop(i);
        this.family = meta[m + 2]!;
        this.w0 = meta[m + 4]!;
        this.w1 = meta[m + 5]!;
        this.w2 = meta[m + 6]!;
        this.w3 = meta[m + 7]!;
        this.lastAddress = address;
      }
      // A view this slot handed out before for the same length, if any (the slot keeps two: a socket
      // hears its client's datagrams and their replies, two lengths of a steady flow). Views are valid
      // only during the call in any case; a steady flow then allocates nothing per datagram.
      const length = meta[m]!;
      let view = recent[i];
      if (view === undefined || view.length !== length) {
        const older = earlier[i];
        if (older !== undefined && older.length === length) {
          earlier[i] = view;
          recent[i] = view = older;
        } else {
          const start = i * slot;
          earlier[i] = view;
          view = recent[i] = arena.subarray(start, start + length);
        }
      }
      receiver.onDatagram(view, address, meta[m + 1]!);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.receiver = null;
    native!.loaded!.addon.close(this.handle);
  }
}

const ERRNO = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

function errnoCode(errno: number): string {
  return ERRNO.get(errno) ?? `errno ${errno}`;
}
