import { nativeAddon, errnoCode, type Addon, type RelayReceiver, type UdpOwner } from './addon.js';

// Words per datagram in the metadata array: length, port, family, unused, then 4 address words.
const META_WORDS = 8;
/** Per arena slot, the last two views handed out, the most recent first (see NativeRelay.deliver). */
const recent: (Buffer | undefined)[] = [];
const earlier: (Buffer | undefined)[] = [];

function addon(): Addon {
  return nativeAddon()!;
}

let arena: { arena: Buffer; meta: Int32Array; slot: number } | null = null;

/** This thread's receive arena of the helper (made on first use). */
function arenaOf(): { arena: Buffer; meta: Int32Array; slot: number } {
  if (arena === null) {
    const shared = addon().udpArena();
    arena = { arena: Buffer.from(shared.arena), meta: new Int32Array(shared.meta), slot: shared.slot };
  }
  return arena;
}

/**
 * A relay socket on the native helper. Datagrams arrive in batches; each is a view of the shared
 * arena, valid until the handler returns (the socket is `transient`).
 */
export class NativeRelay implements UdpOwner {
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

  /**
   * Throws an Error with the errno code (EADDRINUSE, EAFNOSUPPORT, EMFILE…) when it cannot bind.
   * Without `at`, on all addresses and an ephemeral port.
   */
  constructor(ipv6: boolean, receiveBuffer = 0, sendBuffer = 0, at?: { host: string | null; port: number; reusePort: boolean; peer?: { host: string; port: number } }) {
    const [handle, port] = at === undefined
      ? addon().udpBind(this, ipv6, receiveBuffer, sendBuffer)
      : at.peer === undefined
        ? addon().udpBind(this, ipv6, receiveBuffer, sendBuffer, at.host, at.port, at.reusePort)
        : addon().udpBind(this, ipv6, receiveBuffer, sendBuffer, at.host, at.port, at.reusePort, at.peer.host, at.peer.port);
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
    const rc = addon().udpSend(this.handle, header, payload, port, address, offset);
    return rc === 0 ? null : errnoCode(-rc);
  }

  /** Called by the helper with `count` datagrams in the arena. */
  deliver(count: number): void {
    const { arena, meta, slot } = arenaOf();
    const receiver = this.receiver;
    if (receiver === null) return;
    for (let i = 0; i < count && !this.closed; i++) {
      const m = i * META_WORDS;
      let address: string;
      if (meta[m + 4] === this.w0 && meta[m + 5] === this.w1 && meta[m + 6] === this.w2 && meta[m + 7] === this.w3 && meta[m + 2] === this.family) {
        address = this.lastAddress;
      } else {
        address = addon().udpNtop(i);
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

  /** The socket's inode (how /proc/net/udp names it), -1 when closed. */
  get inode(): number {
    return this.closed ? -1 : addon().udpInode(this.handle);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.receiver = null;
    addon().udpClose(this.handle);
  }

  /**
   * Called by the helper: sends the kernel refused after a batch (count > 0), or an error of the
   * socket itself (count 0: it could not be watched again, so nothing more will be read from it).
   */
  onError(code: string, count: number): void {
    if (count === 0) this.receiver?.onSocketFailed?.(`relay socket ${code}`);
    else this.receiver?.onSendError(code, count);
  }
}


