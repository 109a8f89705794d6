import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIPv4, isIPv6 } from 'node:net';
import { addressFromHost, unmapAddress, type SocksAddress } from './protocol/address.js';
import { Command } from './protocol/constants.js';
import { SocksError } from './protocol/errors.js';
import { encodeUdpDatagram, parseUdpHeader } from './protocol/udp-header.js';
import { encodeUotFrame, UotFrameReader } from './protocol/uot.js';
import { dialChain, destinationFor, type ControlConnection, type DialOptions } from './control.js';
import { parseChain, type ProxyChain, type ProxyOptions } from './proxy.js';

export interface ReassociateOptions {
  /** First wait before trying again (default 200 ms); doubles after each failure. */
  readonly initialDelayMs?: number;
  /** Longest wait between attempts (default 10 s). */
  readonly maxDelayMs?: number;
  /** Give up (and close) after this many failed attempts in a row (default: never). */
  readonly maxAttempts?: number;
}

export interface AssociateOptions extends DialOptions {
  /**
   * A proxy URL or options, or an array of them for a chain. Through a chain, datagrams travel over
   * TCP (transport 'tcp', the default there) to the last proxy, which must support it.
   */
  readonly proxy: ProxyChain;
  /** Declare our UDP port in the request (DST 0.0.0.0:port, as PySocks does). Default true; false sends 0.0.0.0:0. */
  readonly declarePort?: boolean;
  /** TCP keepalive delay on the control connection in ms, so a dead proxy is noticed (default 30000; 0 disables). */
  readonly tcpKeepaliveMs?: number;
  /** Application keepalive: send `payload` to host:port every `intervalMs` (keeps NAT mappings on the UDP path open). */
  readonly keepalive?: { readonly intervalMs: number; readonly host: string; readonly port: number; readonly payload?: Buffer };
  /** Set up a new association (same local UDP socket) when the control connection or the proxy is lost. */
  readonly reassociate?: boolean | ReassociateOptions;
  /**
   * 'udp' (default): RFC 1928 UDP ASSOCIATE. 'tcp': datagrams in frames on the TCP connection (hev-socks5's
   * FWD UDP, command 0x05; see docs/udp-over-tcp.md), for networks that block UDP; the proxy must support it.
   * 'auto': UDP first; when nothing comes back (or sending fails) the association moves to TCP, resends what
   * went unanswered and emits 'transport'.
   */
  readonly transport?: 'udp' | 'tcp' | 'auto';
  /** With transport 'auto': how long the first datagrams may go unanswered over UDP before switching to TCP (default 1500 ms). */
  readonly autoTimeoutMs?: number;
}

/** A datagram from the far side: its DATA and who sent it (the proxy reports the real source). */
export interface UdpMessage {
  readonly payload: Buffer;
  readonly from: SocksAddress;
}

export interface UdpAssociationEvents {
  message: [UdpMessage];
  /** The association is over: closed by us (error null) or lost for good. */
  close: [SocksError | null];
  /** The control connection was lost; with `reassociate`, attempts follow. */
  disconnect: [SocksError];
  /** A new association is up: datagrams now go to `relay`. */
  reassociate: [SocksAddress];
  /** transport 'auto' moved from UDP to TCP. */
  transport: ['tcp'];
}

// Datagrams kept for resending while 'auto' waits to hear back over UDP.
const AUTO_KEEP = 32;

/**
 * A UDP association through a SOCKS5 proxy (RFC 1928 §7): a real datagram API. It keeps the
 * control connection open for its whole life; closing either side closes everything.
 */
export class UdpAssociation extends EventEmitter<UdpAssociationEvents> {
  private control: ControlConnection | null = null;
  private relayAddress: SocksAddress;
  private relayHost = '';
  private closed = false;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private knownLocalPort = 0;
  /** transport 'auto' until UDP is known to work: the datagrams sent so far, and the deadline timer. */
  private unconfirmed: { sent: Array<[Uint8Array, string, number]>; timer: NodeJS.Timeout | null } | null = null;

  /** The last hop: the proxy that relays the datagrams. */
  private readonly proxy: ProxyOptions;

  private constructor(
    /** The local UDP socket; null when datagrams travel over TCP. */
    private udp: UdpSocket | null,
    private readonly hops: readonly ProxyOptions[],
    private readonly options: AssociateOptions,
  ) {
    super();
    this.proxy = hops[hops.length - 1]!;
    this.relayAddress = { host: '0.0.0.0', port: 0, type: 'ipv4' };
    if (udp) void this.localPort;
    udp?.on('message', this.onDatagram);
    udp?.on('error', () => {
      // Send errors reach send()'s promise; nothing else is fatal to the association.
    });
  }

  /** 'udp' or 'tcp': how datagrams travel to the proxy. */
  get transport(): 'udp' | 'tcp' {
    return this.udp === null ? 'tcp' : 'udp';
  }

  /** Where our datagrams go: BND.ADDR:BND.PORT of the proxy's reply. */
  get relay(): SocksAddress {
    return this.relayAddress;
  }

  /** The local UDP port our datagrams leave from (still readable after close, e.g. in a 'close' handler). */
  get localPort(): number {
    if (this.udp) {
      try {
        this.knownLocalPort = this.udp.address().port;
      } catch {
        // Closed: the port it had.
      }
      return this.knownLocalPort;
    }
    return this.control?.socket.localPort ?? this.knownLocalPort;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  static async open(options: AssociateOptions): Promise<UdpAssociation> {
    const hops = parseChain(options.proxy);
    const transport = options.transport ?? (hops.length > 1 ? 'tcp' : 'udp');
    if (hops.length > 1 && transport !== 'tcp') {
      throw new SocksError(
        'ERR_CHAIN_UDP',
        `through a chain of ${hops.length} proxies datagrams can only travel over TCP to the last one (transport 'tcp', which that proxy must support); UDP ASSOCIATE needs a UDP path from here to the proxy that relays`,
      );
    }
    const { control } = await dialChain(hops, options);
    if (transport === 'tcp') {
      const association = new UdpAssociation(null, hops, options);
      try {
        await association.establish(control);
      } catch (error) {
        control.destroy();
        throw error;
      }
      return association;
    }
    let udp: UdpSocket | null = null;
    try {
      // The UDP socket leaves from the same local address as the control connection, so the proxy
      // sees one client IP on both.
      const local = control.socket.localAddress ?? '0.0.0.0';
      udp = createSocket(isIPv6(local) && !local.startsWith('::ffff:') ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp!.once('error', reject);
        udp!.bind(0, local.startsWith('::ffff:') ? local.slice(7) : local, () => {
          udp!.off('error', reject);
          resolve();
        });
      });
      const association = new UdpAssociation(udp, hops, options);
      await association.establish(control);
      if (transport === 'auto') association.unconfirmed = { sent: [], timer: null };
      return association;
    } catch (error) {
      control.destroy();
      udp?.close();
      throw error;
    }
  }

  /** Sends `payload` to host:port through the proxy. Resolves once the datagram has left this host. */
  async send(payload: Uint8Array, host: string, port: number): Promise<void> {
    if (this.closed) throw new SocksError('ERR_CLOSED', 'the association is closed');
    if (this.control === null) throw new SocksError('ERR_REASSOCIATING', 'the association is being set up again; try again after the reassociate event');
    const destination = await destinationFor(host, port, this.proxy.remoteDns !== false, this.options.lookup);
    const udp = this.udp;
    if (udp === null) {
      const socket = this.control.socket;
      await new Promise<void>((resolve, reject) => socket.write(encodeUotFrame(destination, payload), (error) => (error ? reject(new SocksError('ERR_TCP_SEND', `cannot send to the proxy: ${error.message}`, null, { cause: error })) : resolve())));
      return;
    }
    const datagram = encodeUdpDatagram(destination, payload);
    const probing = this.unconfirmed;
    if (probing) {
      if (probing.sent.length < AUTO_KEEP) probing.sent.push([payload, host, port]);
      probing.timer ??= setTimeout(() => this.fallBackToTcp(), this.options.autoTimeoutMs ?? 1500);
    }
    await new Promise<void>((resolve, reject) => {
      try {
        udp.send(datagram, this.relayAddress.port, this.relayHost, (error) => {
          if (!error) return resolve();
          // 'auto': a UDP path that cannot even send is a reason to move to TCP now.
          if (probing) return void this.fallBackToTcp().then(resolve, reject);
          reject(new SocksError('ERR_UDP_SEND', `cannot send to the relay ${this.relayHost}:${this.relayAddress.port}: ${(error as NodeJS.ErrnoException).code}`, null, { cause: error }));
        });
      } catch (error) {
        if (probing) return void this.fallBackToTcp().then(resolve, reject);
        reject(new SocksError('ERR_UDP_SEND', `cannot send to the relay: ${(error as Error).message}`, null, { cause: error }));
      }
    });
  }

  private switching: Promise<void> | null = null;

  /** transport 'auto': UDP did not answer; carry on over TCP and resend what went unanswered. */
  private fallBackToTcp(): Promise<void> {
    this.switching ??= (async () => {
      const probing = this.unconfirmed;
      if (!probing || this.closed) return;
      this.unconfirmed = null;
      if (probing.timer) clearTimeout(probing.timer);
      const { control } = await dialChain(this.hops, this.redial());
      const old = this.control;
      this.control = null;
      old?.destroy();
      this.udp?.close();
      this.udp = null;
      if (this.closed) return control.destroy();
      try {
        await this.establishFrames(control);
      } catch (error) {
        control.destroy();
        this.finish(error instanceof SocksError ? error : new SocksError('ERR_TRANSPORT', `cannot move to UDP over TCP: ${(error as Error).message}`));
        return;
      }
      this.emit('transport', 'tcp');
      for (const [payload, host, port] of probing.sent) await this.send(payload, host, port).catch(() => {});
    })();
    return this.switching;
  }

  /** Closes the association: control connection, UDP socket and timers. */
  close(): void {
    this.finish(null);
  }

  /** Datagrams as an async iterator; it ends when the association closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<UdpMessage> {
    const queue: UdpMessage[] = [];
    let wake: (() => void) | null = null;
    const onMessage = (message: UdpMessage): void => {
      queue.push(message);
      wake?.();
    };
    const onClose = (): void => wake?.();
    this.on('message', onMessage);
    this.on('close', onClose);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (this.closed) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      this.off('message', onMessage);
      this.off('close', onClose);
    }
  }

  private async establish(control: ControlConnection): Promise<void> {
    if (this.udp === null) return this.establishFrames(control);
    const declared = this.options.declarePort === false ? 0 : this.localPort;
    const unspecified = this.udp.address().family === 'IPv6' ? '::' : '0.0.0.0';
    const reply = await control.request(Command.UDP_ASSOCIATE, addressFromHost(unspecified, declared));
    control.release();
    const bound = reply.bound;
    // Some servers answer 0.0.0.0 (or a name): that means "the address you reached me on".
    const usable = bound.type !== 'domain' && bound.host !== '0.0.0.0' && bound.host !== '::';
    this.relayHost = usable ? bound.host : (control.socket.remoteAddress ?? this.proxy.host);
    if (isIPv4(this.relayHost) && this.udp.address().family === 'IPv6') this.relayHost = `::ffff:${this.relayHost}`;
    this.relayAddress = usable ? bound : addressFromHost(this.relayHost, bound.port);
    this.watchControl(control, () => {
      // RFC 1928 gives the control connection nothing more to carry; ignore stray bytes.
    });
  }

  /** UDP over TCP: command 0x05, then frames both ways on this connection. */
  private async establishFrames(control: ControlConnection): Promise<void> {
    await control.request(Command.FWD_UDP, addressFromHost('0.0.0.0', 0));
    const early = control.release();
    this.relayHost = control.socket.remoteAddress ?? this.proxy.host;
    this.relayAddress = addressFromHost(this.relayHost, control.socket.remotePort ?? this.proxy.port);
    control.socket.setNoDelay(true);
    const reader = new UotFrameReader((frame) => this.emit('message', { payload: Buffer.from(frame.payload), from: frame.address }));
    const frames = (chunk: Buffer): void => {
      if (reader.push(chunk)) control.socket.destroy();
    };
    this.watchControl(control, frames);
    if (early.length > 0) frames(early);
  }

  private watchControl(control: ControlConnection, onData: (chunk: Buffer) => void): void {
    this.control = control;
    const socket = control.socket;
    const keepalive = this.options.tcpKeepaliveMs ?? 30_000;
    if (keepalive > 0) socket.setKeepAlive(true, keepalive);
    socket.on('data', onData);
    socket.on('error', () => {});
    socket.once('close', () => {
      if (this.control === control) this.lost(new SocksError('ERR_CONTROL_CLOSED', `the proxy ${this.proxy.host}:${this.proxy.port} closed the association's control connection`));
    });
    this.startKeepalive();
  }

  private readonly onDatagram = (datagram: Buffer, from: RemoteInfo): void => {
    // Only the relay speaks for the association; anything else reaching our port is ignored.
    if (from.port !== this.relayAddress.port || !sameIp(from.address, this.relayHost)) return;
    const header = parseUdpHeader(datagram);
    if (header.status !== 'ok' || header.value.fragment !== 0) return;
    if (this.unconfirmed) {
      // 'auto': UDP works here.
      if (this.unconfirmed.timer) clearTimeout(this.unconfirmed.timer);
      this.unconfirmed = null;
    }
    this.emit('message', { payload: datagram.subarray(header.size), from: header.value.address });
  };

  private lost(error: SocksError): void {
    this.control = null;
    this.stopKeepalive();
    if (this.closed) return;
    const retry = this.options.reassociate;
    if (!retry) return this.finish(error);
    this.emit('disconnect', error);
    this.scheduleRetry(typeof retry === 'object' ? retry : {});
  }

  private scheduleRetry(retry: ReassociateOptions): void {
    if (retry.maxAttempts !== undefined && this.failures >= retry.maxAttempts) {
      return this.finish(new SocksError('ERR_REASSOCIATE_FAILED', `gave up setting up a new association after ${this.failures} attempts`));
    }
    const delay = Math.min((retry.initialDelayMs ?? 200) * 2 ** this.failures, retry.maxDelayMs ?? 10_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      dialChain(this.hops, this.redial())
        .then(async ({ control }) => {
          if (this.closed) return control.destroy();
          try {
            await this.establish(control);
          } catch (error) {
            control.destroy();
            throw error;
          }
          this.failures = 0;
          this.emit('reassociate', this.relayAddress);
        })
        .catch(() => {
          this.failures++;
          if (!this.closed) this.scheduleRetry(retry);
        });
    }, delay);
  }

  /** Options for a new control connection: not the caller's socket (gone with the old one) or signal. */
  private redial(): DialOptions {
    const { timeoutMs, localAddress, socketOptions, lookup } = this.options;
    return { timeoutMs: timeoutMs ?? 10_000, localAddress, socketOptions, lookup };
  }

  private startKeepalive(): void {
    const keepalive = this.options.keepalive;
    if (!keepalive || keepalive.intervalMs <= 0) return;
    const payload = keepalive.payload ?? Buffer.alloc(0);
    this.keepaliveTimer = setInterval(() => {
      this.send(payload, keepalive.host, keepalive.port).catch(() => {});
    }, keepalive.intervalMs);
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
  }

  private finish(error: SocksError | null): void {
    if (this.closed) return;
    this.closed = true;
    if (this.unconfirmed?.timer) clearTimeout(this.unconfirmed.timer);
    this.unconfirmed = null;
    this.stopKeepalive();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const control = this.control;
    this.control = null;
    control?.destroy();
    this.udp?.close();
    this.emit('close', error);
  }
}

function sameIp(a: string, b: string): boolean {
  if (a === b) return true;
  const strip = unmapAddress;
  return strip(a) === strip(b);
}

/**
 * UDP ASSOCIATE through the proxy: resolves to an association with send(), 'message' events (or
 * `for await`), close(), and a 'close' event when the proxy ends it.
 *
 *   const udp = await associate({ proxy: 'socks5://127.0.0.1:1080' });
 *   udp.on('message', ({ payload, from }) => console.log(from, payload));
 *   await udp.send(Buffer.from('hello'), '192.0.2.10', 7);
 */
export function associate(options: AssociateOptions): Promise<UdpAssociation> {
  return UdpAssociation.open(options);
}
