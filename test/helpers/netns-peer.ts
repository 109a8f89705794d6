/**
 * A program the namespace tests run inside a namespace (`ip netns exec NS node netns-peer.js ROLE ...`):
 *
 *   echo HOST PORT                                   a UDP echo; prints {"ready":true}
 *   client NAME PROXY_HOST PROXY_PORT ECHO_HOST ECHO_PORT
 *                                                    a UDP ASSOCIATE client (socksgate's client library)
 *                                                    driven by JSON commands on stdin, one a line
 *
 * Client commands (each answered by a line with the same id, or {id, error}):
 *   {op:'open', reassociate?, declarePort?}
 *                                   a new association from a new UDP socket → {localPort, relay}; with
 *                                   reassociate, the library sets up a new one (same socket) when the
 *                                   control connection is lost: {event:'disconnected'}, {event:'reassociated'};
 *                                   declarePort false sends DST 0.0.0.0:0 instead of our UDP port
 *   {op:'close'}                    close the association
 *   {op:'echo', count, timeoutMs?}  count round trips, one at a time, each given timeoutMs (2000)
 *                                   to come back → {sent, echoed}
 *   {op:'flow', intervalMs}         start sending one datagram every intervalMs
 *   {op:'progress'}                 how far it is → {sent, echoed}
 *   {op:'stop'}                     stop it, wait for late echoes → {sent, echoed}
 * and, unasked, {event:'closed', localPort, error} when the association ends.
 *
 * A datagram counts as echoed only when its payload comes back byte for byte, from the echo's
 * address, through the relay. Without a role (as when the test runner loads it) it does nothing.
 */
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { associate, type UdpAssociation } from 'socksgate-client';

function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function runEcho(host: string, port: number): void {
  const socket = createSocket('udp4');
  socket.on('message', (data, from) => socket.send(data, from.port, from.address));
  socket.bind(port, host, () => print({ ready: true }));
  process.stdin.resume();
  process.stdin.on('end', () => socket.close());
}

class EchoClient {
  private association: UdpAssociation | null = null;
  private seq = 0;
  /** Payloads sent and not yet echoed, by their tag. */
  private readonly outstanding = new Map<string, { payload: Buffer; done: (() => void) | null }>();
  private flow: { timer: NodeJS.Timeout; sent: number; echoed: number } | null = null;

  constructor(
    private readonly name: string,
    private readonly proxy: string,
    private readonly echoHost: string,
    private readonly echoPort: number,
  ) {}

  async open(reassociate: boolean, declarePort: boolean): Promise<Record<string, unknown>> {
    const previous = this.association;
    this.association = null;
    previous?.close();
    this.outstanding.clear();
    const association = await associate({
      proxy: this.proxy,
      timeoutMs: 3000,
      declarePort,
      ...(reassociate ? { reassociate: { initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: 20 } } : {}),
    });
    this.association = association;
    association.on('message', ({ payload, from }) => {
      if (from.host !== this.echoHost || from.port !== this.echoPort) return;
      const tag = payload.toString('latin1', 0, payload.indexOf(0x3a, this.name.length + 1) + 1);
      const entry = this.outstanding.get(tag);
      if (!entry || !entry.payload.equals(payload)) return;
      this.outstanding.delete(tag);
      if (this.flow) this.flow.echoed++;
      entry.done?.();
    });
    // Read now: once closed, the association's socket no longer has a port to report.
    const localPort = association.localPort;
    association.on('close', (error) => {
      if (this.association === association) print({ event: 'closed', localPort, error: error?.message ?? null });
    });
    association.on('disconnect', (error) => print({ event: 'disconnected', localPort, error: error.message }));
    association.on('reassociate', (relay) => print({ event: 'reassociated', localPort, relay: `${relay.host}:${relay.port}` }));
    return { localPort, relay: `${association.relay.host}:${association.relay.port}` };
  }

  /** One datagram of a varying size: "NAME:SEQ:" and random bytes. */
  private async sendOne(timeoutMs = 2000): Promise<{ tag: string; echoed: Promise<boolean> }> {
    const association = this.association;
    if (!association) throw new Error('no association');
    const tag = `${this.name}:${this.seq++}:`;
    const payload = Buffer.concat([Buffer.from(tag, 'latin1'), randomBytes(1 + ((this.seq * 97) % 1200))]);
    const entry: { payload: Buffer; done: (() => void) | null } = { payload, done: null };
    const echoed = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      entry.done = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
    this.outstanding.set(tag, entry);
    await association.send(payload, this.echoHost, this.echoPort);
    return { tag, echoed };
  }

  async echo(count: number, timeoutMs?: number): Promise<Record<string, unknown>> {
    let echoed = 0;
    for (let i = 0; i < count; i++) {
      const one = await this.sendOne(timeoutMs);
      if (await one.echoed) echoed++;
      else this.outstanding.delete(one.tag);
    }
    return { sent: count, echoed };
  }

  startFlow(intervalMs: number): Record<string, unknown> {
    if (this.flow) throw new Error('a flow is already running');
    const flow = {
      sent: 0,
      echoed: 0,
      timer: setInterval(() => {
        flow.sent++;
        this.sendOne().catch(() => {});
      }, intervalMs),
    };
    this.flow = flow;
    return {};
  }

  progress(): Record<string, unknown> {
    if (!this.flow) throw new Error('no flow is running');
    return { sent: this.flow.sent, echoed: this.flow.echoed };
  }

  async stopFlow(): Promise<Record<string, unknown>> {
    const flow = this.flow;
    if (!flow) throw new Error('no flow is running');
    clearInterval(flow.timer);
    const deadline = Date.now() + 2000;
    while (flow.echoed < flow.sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.flow = null;
    this.outstanding.clear();
    return { sent: flow.sent, echoed: flow.echoed };
  }

  close(): void {
    if (this.flow) clearInterval(this.flow.timer);
    this.flow = null;
    const association = this.association;
    this.association = null;
    association?.close();
  }
}

function runClient(name: string, proxyHost: string, proxyPort: number, echoHost: string, echoPort: number): void {
  const client = new EchoClient(name, `socks5://${proxyHost}:${proxyPort}`, echoHost, echoPort);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (text) => {
    let command: { id?: number; op?: string; count?: number; timeoutMs?: number; intervalMs?: number; reassociate?: boolean; declarePort?: boolean };
    try {
      command = JSON.parse(text) as typeof command;
    } catch {
      return print({ error: `not JSON: ${text}` });
    }
    const id = command.id;
    const answer = async (): Promise<Record<string, unknown>> => {
      switch (command.op) {
        case 'open':
          return client.open(command.reassociate === true, command.declarePort !== false);
        case 'close':
          client.close();
          return {};
        case 'echo':
          return client.echo(command.count ?? 1, command.timeoutMs);
        case 'flow':
          return client.startFlow(command.intervalMs ?? 50);
        case 'progress':
          return client.progress();
        case 'stop':
          return client.stopFlow();
        default:
          throw new Error(`unknown op ${command.op}`);
      }
    };
    answer().then(
      (result) => print({ id, ...result }),
      (error: Error) => print({ id, error: error.message }),
    );
  });
  lines.on('close', () => client.close());
}

const [role, ...args] = process.argv.slice(2);
if (role === 'echo') runEcho(args[0]!, Number(args[1]));
else if (role === 'client') runClient(args[0]!, args[1]!, Number(args[2]), args[3]!, Number(args[4]));
