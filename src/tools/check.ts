import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, isIPv6, type Socket } from 'node:net';
import { addressFromHost, formatAddress, type SocksAddress } from 'socksgate-client/protocol';
import { Command, MAX_UDP_PAYLOAD, Method, describeMethod } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import { encodeUdpDatagram, parseUdpHeader } from 'socksgate-client/protocol';
import { ControlConnection } from 'socksgate-client/control';
import { connect } from 'socksgate-client';
import { parseProxy, type ProxyInput, type ProxyOptions } from 'socksgate-client';
import { bindUdp } from '../udp/socket.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  readonly id: string;
  readonly title: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do about a warning or failure. */
  readonly hint?: string;
  readonly data?: Record<string, unknown>;
}

export interface CheckReport {
  readonly proxy: string;
  readonly verdict: 'pass' | 'warn' | 'fail';
  readonly checks: CheckResult[];
}

export interface CheckOptions {
  readonly proxy: ProxyInput;
  /** A TCP endpoint for the CONNECT check. */
  readonly tcp?: { host: string; port: number };
  /** A UDP echo: round trip, size probe, fragments, source-port and lifetime checks, latency. */
  readonly udpEcho?: { host: string; port: number };
  /** A DNS server for a UDP round trip with a real query (when there is no echo). */
  readonly dns?: { host: string; port: number; name: string };
  /** Per-step timeout in ms (default 2000). */
  readonly timeoutMs?: number;
  /** Told what is being checked, as it happens. */
  readonly onProgress?: (message: string) => void;
}

interface UdpTarget {
  readonly host: string;
  readonly port: number;
  readonly payload: (size: number) => Buffer;
  /** Whether a reply answers the payload sent. */
  readonly matches: (sent: Buffer, reply: Buffer) => boolean;
}

/**
 * Diagnoses a SOCKS5 server's TCP and UDP paths, the checks an operator would otherwise do by hand
 * with tcpdump. Every step is bounded by the timeout; nothing is left open afterwards.
 */
export async function runCheck(options: CheckOptions): Promise<CheckReport> {
  const proxy = parseProxy(options.proxy);
  const timeoutMs = options.timeoutMs ?? 2000;
  const progress = options.onProgress ?? (() => {});
  const checks: CheckResult[] = [];
  const add = (result: CheckResult): void => {
    checks.push(result);
  };

  progress('handshake: which methods the server accepts');
  add(await checkMethods(proxy, timeoutMs));
  if (checks[0]!.status === 'fail') return report(proxy, checks);

  if (options.tcp) {
    progress(`CONNECT to ${options.tcp.host}:${options.tcp.port}`);
    add(await checkConnect(proxy, options.tcp, timeoutMs));
  } else add(skip('connect', 'CONNECT', 'no --tcp target given'));

  const target = udpTarget(options);
  progress('UDP ASSOCIATE: the reply');
  const probe = await UdpProbe.open(proxy, timeoutMs).catch((error: Error) => error);
  if (probe instanceof Error) {
    add({ id: 'associate', title: 'UDP ASSOCIATE', status: 'fail', detail: probe.message, hint: hintFor(probe, 'UDP ASSOCIATE') });
    return report(proxy, checks);
  }
  try {
    add(probe.replyCheck());
    if (!target) {
      add(skip('udp-round-trip', 'UDP round trip', 'no --udp-echo or --dns target given'));
      return report(proxy, checks);
    }
    progress(`UDP round trip to ${target.host}:${target.port}`);
    const trip = await probe.roundTrip(target, 32, timeoutMs);
    add(
      trip.ok
        ? { id: 'udp-round-trip', title: 'UDP round trip', status: 'pass', detail: `a datagram to ${target.host}:${target.port} came back through the relay in ${trip.ms.toFixed(1)} ms`, data: { ms: trip.ms } }
        : {
            id: 'udp-round-trip',
            title: 'UDP round trip',
            status: 'fail',
            detail: `no answer from ${target.host}:${target.port} through the relay ${formatAddress(probe.relay)} within ${timeoutMs} ms${trip.error ? ` (${trip.error})` : ''}`,
            hint: `check that ${formatAddress(probe.relay)} is reachable from this host over UDP (firewall, NAT, or a wrong advertised address such as udp.advertise), and that the target answers`,
          },
    );
    if (!trip.ok) return report(proxy, checks);

    if (options.udpEcho) {
      progress('UDP: largest datagram that gets through (binary search)');
      add(await probe.sizeCheck(target, timeoutMs));
      progress('UDP: a datagram with FRAG ≠ 0');
      add(await probe.fragmentCheck(target, timeoutMs));
      progress('UDP: added latency');
      add(await probe.latencyCheck(target, timeoutMs));
    } else {
      add(skip('max-datagram', 'Largest datagram', 'needs a --udp-echo target'));
      add(skip('fragments', 'Fragments (FRAG ≠ 0)', 'needs a --udp-echo target'));
      add(skip('latency', 'Added latency', 'needs a --udp-echo target'));
    }
    progress('UDP: datagrams from another source port');
    add(await probe.hijackCheck(target, timeoutMs));
    progress('UDP: does the association end with its control connection');
    add(await probe.lifetimeCheck(target, timeoutMs));
  } finally {
    probe.close();
  }
  return report(proxy, checks);
}

function report(proxy: ProxyOptions, checks: CheckResult[]): CheckReport {
  const verdict = checks.some((c) => c.status === 'fail') ? 'fail' : checks.some((c) => c.status === 'warn') ? 'warn' : 'pass';
  return { proxy: `${proxy.host}:${proxy.port}`, verdict, checks };
}

const skip = (id: string, title: string, why: string): CheckResult => ({ id, title, status: 'skip', detail: why });

/** A hint for a failed step; `command` names the SOCKS command that got the reply, if any. */
function hintFor(error: Error, command?: 'CONNECT' | 'UDP ASSOCIATE'): string | undefined {
  const code = (error as SocksError).code;
  const reply = code === 'ERR_SOCKS_REPLY' ? (error as SocksError).reply : null;
  const what = command ?? 'this request';
  if (reply === 0x07) return `the server does not support ${what} (command not supported)`;
  if (reply === 0x02) return `a rule on the server forbids ${what} for this client`;
  if (reply === 0x05 && command === 'CONNECT') return 'the target refused the connection: is something listening on that port?';
  if ((reply === 0x03 || reply === 0x04) && command === 'CONNECT') return 'the server cannot reach the target (network or host unreachable from the server)';
  if (code === 'ERR_PROXY_UNREACHABLE') return 'is the server running, and is the address and port right?';
  if (code === 'ERR_AUTH_FAILED') return 'check the username and password in the URL';
  if (code === 'ERR_NO_ACCEPTABLE_METHOD') return 'put a username and password in the URL (socks5://user:pass@host:port)';
  return undefined;
}

function udpTarget(options: CheckOptions): UdpTarget | null {
  if (options.udpEcho) {
    return { ...options.udpEcho, payload: (size) => randomBytes(size), matches: (sent, reply) => sent.equals(reply) };
  }
  if (options.dns) {
    const name = options.dns.name;
    return {
      host: options.dns.host,
      port: options.dns.port,
      payload: () => dnsQuery(name, randomBytes(2).readUInt16BE(0)),
      matches: (sent, reply) => reply.length >= 12 && reply.readUInt16BE(0) === sent.readUInt16BE(0) && (reply[2]! & 0x80) !== 0,
    };
  }
  return null;
}

function dnsQuery(name: string, id: number): Buffer {
  const labels = name.split('.').filter(Boolean).flatMap((label) => [Buffer.from([label.length]), Buffer.from(label)]);
  return Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** Sends a greeting with one method and returns the server's choice (or an error message). */
function selectedMethod(proxy: ProxyOptions, method: number, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const socket: Socket = tcpConnect({ host: proxy.host, port: proxy.port });
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    let got = Buffer.alloc(0);
    const done = (value: number | string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    socket.on('connect', () => socket.write(Buffer.from([5, 1, method])));
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2) done(got[0] === 5 ? got[1]! : `answered with version ${got[0]}, not a SOCKS5 server`);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => done(`${error.code ?? error.message}`));
    socket.on('end', () => done('closed the connection without choosing'));
  });
}

async function checkMethods(proxy: ProxyOptions, timeoutMs: number): Promise<CheckResult> {
  const title = 'Methods and authentication';
  const none = await selectedMethod(proxy, Method.NO_AUTH, timeoutMs);
  const password = await selectedMethod(proxy, Method.USERNAME_PASSWORD, timeoutMs);
  if (typeof none === 'string' && typeof password === 'string') {
    return { id: 'methods', title, status: 'fail', detail: `cannot talk SOCKS5 to ${proxy.host}:${proxy.port}: ${none}`, hint: 'is the server running, and is this its SOCKS5 port?' };
  }
  const accepts = [none === Method.NO_AUTH ? 'no authentication' : null, password === Method.USERNAME_PASSWORD ? 'username/password' : null].filter(Boolean) as string[];
  const data = { noAuth: none === Method.NO_AUTH, usernamePassword: password === Method.USERNAME_PASSWORD };
  const withCredentials = proxy.username !== undefined;
  if (accepts.length === 0) {
    return { id: 'methods', title, status: 'fail', detail: `the server accepts neither no authentication nor username/password (answers: ${describe(none)}, ${describe(password)})`, data };
  }
  try {
    (await ControlConnection.open(proxy, { timeoutMs })).destroy();
  } catch (error) {
    return { id: 'methods', title, status: 'fail', detail: `accepts ${accepts.join(' and ')}, but the handshake failed: ${(error as Error).message}`, hint: hintFor(error as Error), data };
  }
  const local = proxy.host === 'localhost' || proxy.host.startsWith('127.') || proxy.host === '::1';
  if (data.noAuth && !local) {
    return { id: 'methods', title, status: 'warn', detail: `accepts ${accepts.join(' and ')}`, hint: 'anyone who can reach it may use it without a login: an open proxy', data };
  }
  return { id: 'methods', title, status: 'pass', detail: `accepts ${accepts.join(' and ')}${withCredentials ? '; our credentials were accepted' : ''}`, data };
}

function describe(answer: number | string): string {
  return typeof answer === 'string' ? answer : describeMethod(answer);
}

async function checkConnect(proxy: ProxyOptions, target: { host: string; port: number }, timeoutMs: number): Promise<CheckResult> {
  const started = performance.now();
  try {
    const socket = await connect({ proxy, host: target.host, port: target.port, timeoutMs });
    socket.destroy();
    return { id: 'connect', title: 'CONNECT', status: 'pass', detail: `connected to ${target.host}:${target.port} in ${(performance.now() - started).toFixed(1)} ms` };
  } catch (error) {
    return { id: 'connect', title: 'CONNECT', status: 'fail', detail: (error as Error).message, hint: hintFor(error as Error, 'CONNECT') };
  }
}

/** A UDP association opened by hand, so that each check can control sockets and ports. */
class UdpProbe {
  private readonly sockets: UdpSocket[] = [];
  private constructor(
    private readonly control: ControlConnection,
    readonly relay: SocksAddress,
    private readonly relayHost: string,
    private readonly udp: UdpSocket,
    private readonly declaredPort: number,
  ) {
    this.sockets.push(udp);
  }

  static async open(proxy: ProxyOptions, timeoutMs: number): Promise<UdpProbe> {
    const control = await ControlConnection.open(proxy, { timeoutMs });
    let udp: Awaited<ReturnType<typeof bindLocal>> | null = null;
    try {
      const local = (control.socket.localAddress ?? '0.0.0.0').replace(/^::ffff:/, '');
      udp = await bindLocal(local);
      const port = udp.address().port;
      const reply = await control.request(Command.UDP_ASSOCIATE, addressFromHost(isIPv6(local) ? '::' : '0.0.0.0', port));
      control.release();
      control.socket.on('error', () => {});
      const unspecified = reply.bound.host === '0.0.0.0' || reply.bound.host === '::';
      const relayHost = unspecified ? (control.socket.remoteAddress ?? proxy.host).replace(/^::ffff:/, '') : reply.bound.host;
      return new UdpProbe(control, reply.bound, relayHost, udp, port);
    } catch (error) {
      // A refused ASSOCIATE leaves no probe to own the local socket: close it here.
      udp?.close();
      control.destroy();
      throw error;
    }
  }

  close(): void {
    this.control.destroy();
    for (const socket of this.sockets.splice(0)) socket.close();
  }

  replyCheck(): CheckResult {
    const title = 'UDP ASSOCIATE reply';
    const where = formatAddress(this.relay);
    if (this.relay.host === '0.0.0.0' || this.relay.host === '::') {
      return {
        id: 'associate',
        title,
        status: 'warn',
        detail: `BND.ADDR is ${where}: clients must guess the relay address (this check used ${this.relayHost})`,
        hint: 'the server should answer with an address clients can reach (socksgate: udp.advertise, Dante: external)',
        data: { relay: where },
      };
    }
    const family = this.udp.address().family;
    if ((family === 'IPv4') === isIPv6(this.relay.host)) {
      return { id: 'associate', title, status: 'fail', detail: `BND.ADDR ${where} is an ${isIPv6(this.relay.host) ? 'IPv6' : 'IPv4'} address; this client reached the server over ${family}`, hint: 'the advertised relay address (udp.advertise) cannot be reached from this client', data: { relay: where } };
    }
    return { id: 'associate', title, status: 'pass', detail: `relay at ${where}`, data: { relay: where } };
  }

  /** Sends one datagram from `socket` and waits for the matching answer on it. */
  async roundTrip(target: UdpTarget, size: number, timeoutMs: number, options: { socket?: UdpSocket; frag?: number } = {}): Promise<{ ok: boolean; ms: number; error?: string }> {
    const socket = options.socket ?? this.udp;
    const payload = target.payload(size);
    const datagram = encodeUdpDatagram(addressFromHost(target.host, target.port), payload, options.frag ?? 0);
    const started = performance.now();
    return new Promise((resolve) => {
      const done = (ok: boolean, error?: string): void => {
        clearTimeout(timer);
        socket.off('message', onMessage);
        resolve({ ok, ms: performance.now() - started, ...(error ? { error } : {}) });
      };
      const onMessage = (message: Buffer): void => {
        const header = parseUdpHeader(message);
        if (header.status === 'ok' && target.matches(payload, message.subarray(header.size))) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      socket.on('message', onMessage);
      try {
        socket.send(datagram, this.relay.port, this.relayHost, (error) => {
          if (error) done(false, (error as NodeJS.ErrnoException).code);
        });
      } catch (error) {
        done(false, (error as NodeJS.ErrnoException).code ?? (error as Error).message);
      }
    });
  }

  async sizeCheck(target: UdpTarget, timeoutMs: number): Promise<CheckResult> {
    let low = 1;
    // The largest payload that fits with the smallest header (IPv4 destination: 10 bytes).
    let high = MAX_UDP_PAYLOAD - 10;
    const probeTimeout = Math.min(timeoutMs, 1000);
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if ((await this.roundTrip(target, middle, probeTimeout)).ok) low = middle;
      else high = middle - 1;
    }
    const status: CheckStatus = low >= 1472 ? 'pass' : 'warn';
    return {
      id: 'max-datagram',
      title: 'Largest datagram',
      status,
      detail: `${low} bytes of payload make the round trip`,
      ...(status === 'warn' ? { hint: 'datagrams larger than this are lost on the way: applications should keep below it (QUIC needs 1200)' } : {}),
      data: { bytes: low },
    };
  }

  async fragmentCheck(target: UdpTarget, timeoutMs: number): Promise<CheckResult> {
    // One fragment that is also the last (FRAG 0x81): a whole datagram for a server that reassembles.
    const trip = await this.roundTrip(target, 64, timeoutMs, { frag: 0x81 });
    return {
      id: 'fragments',
      title: 'Fragments (FRAG ≠ 0)',
      status: 'pass',
      detail: trip.ok ? 'reassembled and relayed (RFC 1928 §7 fragmentation is implemented)' : 'dropped (RFC 1928 allows a server not to implement fragmentation)',
      data: { reassembles: trip.ok },
    };
  }

  async latencyCheck(target: UdpTarget, timeoutMs: number): Promise<CheckResult> {
    const through: number[] = [];
    for (let i = 0; i < 20; i++) {
      const trip = await this.roundTrip(target, 64, timeoutMs);
      if (trip.ok) through.push(trip.ms);
    }
    const direct = await directRoundTrips(target, 20, timeoutMs);
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
    const proxied = median(through);
    if (through.length === 0) return { id: 'latency', title: 'Added latency', status: 'warn', detail: 'no round trip succeeded', hint: 'the path is losing datagrams' };
    const base = direct.length > 0 ? median(direct) : null;
    const detail = base === null ? `median round trip through the proxy ${proxied.toFixed(2)} ms (the target is not reachable directly from here)` : `median round trip ${proxied.toFixed(2)} ms through the proxy, ${base.toFixed(2)} ms direct: +${(proxied - base).toFixed(2)} ms`;
    return { id: 'latency', title: 'Added latency', status: 'pass', detail, data: { proxiedMs: proxied, directMs: base, samples: through.length } };
  }

  async hijackCheck(target: UdpTarget, timeoutMs: number): Promise<CheckResult> {
    const local = this.udp.address().address;
    const other = await bindLocal(local);
    this.sockets.push(other);
    const trip = await this.roundTrip(target, 32, timeoutMs, { socket: other });
    return trip.ok
      ? {
          id: 'source-port',
          title: 'Datagrams from another source port',
          status: 'fail',
          detail: `a datagram from port ${other.address().port} (not the declared ${this.declaredPort}) was relayed and answered`,
          hint: 'anyone on the client\'s address can use or take over the association: the server should accept only the port the client declared or first used',
        }
      : { id: 'source-port', title: 'Datagrams from another source port', status: 'pass', detail: `a datagram from port ${other.address().port} was not relayed (only the declared port ${this.declaredPort} is accepted)` };
  }

  async lifetimeCheck(target: UdpTarget, timeoutMs: number): Promise<CheckResult> {
    this.control.destroy();
    // Give the server a moment to notice the closed TCP connection, then try the old relay again.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const trip = await this.roundTrip(target, 32, timeoutMs);
    return trip.ok
      ? {
          id: 'lifetime',
          title: 'Association ends with its control connection',
          status: 'fail',
          detail: 'the relay still answered after the control connection closed',
          hint: 'RFC 1928 §7: the association must end with its TCP connection; otherwise relays leak and can be reused by others',
        }
      : { id: 'lifetime', title: 'Association ends with its control connection', status: 'pass', detail: 'after the control connection closed, the relay no longer answered' };
  }
}

/** A UDP socket on `host`, any port (the family follows the address). */
async function bindLocal(host: string): Promise<UdpSocket> {
  return (await bindUdp(0, host)).socket;
}

/** Round trips straight to the target (no proxy), when it is reachable from here. */
async function directRoundTrips(target: UdpTarget, count: number, timeoutMs: number): Promise<number[]> {
  const socket = createSocket(isIPv6(target.host) ? 'udp6' : 'udp4');
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const payload = target.payload(64);
      const started = performance.now();
      const ok = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => finish(false), Math.min(timeoutMs, 500));
        const finish = (value: boolean): void => {
          clearTimeout(timer);
          socket.off('message', onMessage);
          resolve(value);
        };
        const onMessage = (message: Buffer): void => {
          if (target.matches(payload, message)) finish(true);
        };
        socket.on('message', onMessage);
        socket.send(payload, target.port, target.host, (error) => error && finish(false));
      });
      if (!ok) break;
      times.push(performance.now() - started);
    }
  } finally {
    socket.close();
  }
  return times;
}

/** The report for people: one line per check, a hint under each problem, the verdict last. */
export function formatReport(report: CheckReport): string {
  const mark: Record<CheckStatus, string> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL', skip: 'SKIP' };
  const lines = [`socksgate check ${report.proxy}`, ''];
  for (const check of report.checks) {
    lines.push(`  [${mark[check.status]}] ${check.title}: ${check.detail}`);
    if (check.hint && (check.status === 'fail' || check.status === 'warn')) lines.push(`         hint: ${check.hint}`);
  }
  const counts = (['pass', 'warn', 'fail', 'skip'] as const).map((s) => `${report.checks.filter((c) => c.status === s).length} ${s}`).join(', ');
  lines.push('', `verdict: ${report.verdict.toUpperCase()} (${counts})`);
  return lines.join('\n');
}
