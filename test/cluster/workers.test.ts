import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { startCli, listenPorts, type RunningCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { freeTcpUdpPort, startEcho } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { startUdpEcho, UdpPeer, unwrap, wrap } from '../helpers/udp.js';
import { nativeLoaded } from '../../src/native/addon.js';

interface Status {
  sessions: Array<{ client: string; command: string; worker: number }>;
  totals: Record<string, number>;
  drops: Record<string, number>;
  workers: Array<{ worker: number; pid: number; sessions: number; claims?: { known: number; pending: number } }>;
  claims?: number;
}

async function fetchText(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.text() };
}

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} is exported`);
  return Number(line.split(' ')[1]);
}

async function startWorkers(extra: string[]): Promise<{ cli: RunningCli; port: number; admin: string }> {
  const adminPort = await freeTcpUdpPort();
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--workers', '2', '--admin', `127.0.0.1:${adminPort}`, '--log-format', 'json', '--allow-loopback-targets', ...extra]);
  const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 60_000);
  assert.equal(line.workers, 2);
  return { cli, port: listenPorts(line).get('127.0.0.1')!, admin: `http://127.0.0.1:${adminPort}` };
}

/** An association whose control connection and UDP socket both come from `clientHost`. */
async function associateFrom(socksPort: number, clientHost: string, declare: boolean): Promise<{ control: Peer; udp: UdpPeer; relayPort: number }> {
  const udp = await UdpPeer.bind(clientHost);
  const control = await Peer.connect(socksPort, '127.0.0.1', clientHost);
  await handshake(control);
  control.write(request(3, '0.0.0.0', declare ? udp.port : 0));
  const reply = await readReply(control);
  assert.equal(reply.code, 0, 'UDP ASSOCIATE succeeded');
  return { control, udp, relayPort: reply.port };
}

function release(open: Array<{ control: Peer; udp: UdpPeer }>): void {
  for (const a of open) {
    a.control.destroy();
    a.udp.close();
  }
}

/** Sends `count` numbered datagrams one at a time and checks each echo is this association's, byte for byte. */
async function roundTrips(a: { udp: UdpPeer; relayPort: number }, echoPort: number, tag: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const payload = Buffer.from(`${tag}#${i}:${'x'.repeat(i % 300)}`);
    await a.udp.send(wrap('127.0.0.1', echoPort, payload), a.relayPort, '127.0.0.1');
    const got = unwrap((await a.udp.receive(3000)).data);
    assert.deepEqual(got.data, payload, `${tag}: echo ${i} is byte-exact and not another client's`);
  }
}

describe('workers (--workers 2)', () => {
  const running: RunningCli[] = [];
  after(async () => {
    for (const cli of running) await cli.stop().catch(() => {});
  });

  test('CONNECT through the workers; metrics summed over them; one reload line; SIGTERM drains and exits 0', async () => {
    const echo = await startEcho();
    const { cli, port, admin } = await startWorkers([]);
    running.push(cli);
    try {
      for (let i = 0; i < 6; i++) {
        const peer = await Peer.connect(port);
        await handshake(peer);
        peer.write(request(1, '127.0.0.1', echo.port));
        assert.equal((await readReply(peer)).code, 0);
        peer.write(Buffer.from(`hello ${i}`));
        assert.equal((await peer.read(`hello ${i}`.length)).toString(), `hello ${i}`);
        peer.destroy();
      }
      const status = JSON.parse((await fetchText(`${admin}/api/status`)).body) as Status;
      assert.deepEqual(
        status.workers.map((w) => w.worker),
        [1, 2],
      );
      let metrics = '';
      for (let i = 0; i < 50; i++) {
        metrics = (await fetchText(`${admin}/metrics`)).body;
        if (metric(metrics, 'socksgate_sessions_total{command="connect"}') === 6) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(metric(metrics, 'socksgate_sessions_total{command="connect"}'), 6, 'the six sessions, summed over both workers');
      assert.equal(metric(metrics, 'socksgate_workers'), 2);
      assert.equal((await fetchText(`${admin}/readyz`)).status, 200);

      cli.child.kill('SIGHUP');
      await cli.waitForLine((l) => l.msg === 'configuration reloaded');
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(cli.lines.filter((l) => l.msg === 'configuration reloaded').length, 1, 'the primary reports the reload once');
      assert.equal(cli.lines.find((l) => l.msg === 'configuration reloaded')!.workers, 2);

      assert.equal(await cli.stop(), 0, cli.output());
      assert.ok(cli.lines.some((l) => l.msg === 'shutting down'));
    } finally {
      await echo.close();
    }
  });

  test('fixed-port mode: every datagram reaches its own association, whichever worker reads it', async (t) => {
    const echo = await startUdpEcho();
    const udpPort = await freeTcpUdpPort();
    const { cli, port, admin } = await startWorkers(['--udp-port', String(udpPort)]);
    running.push(cli);
    const open: Array<{ control: Peer; udp: UdpPeer; relayPort: number }> = [];
    try {
      // Declared ports, all from one IP; then undeclared ones from distinct IPs, whose port the first datagram fixes.
      for (let i = 0; i < 8; i++) open.push(await associateFrom(port, '127.0.0.1', true));
      for (let i = 0; i < 8; i++) open.push(await associateFrom(port, `127.0.0.${20 + i}`, false));
      for (const a of open) assert.equal(a.relayPort, udpPort, 'every association shares the fixed port');
      await Promise.all(open.map((a, i) => roundTrips(a, echo.port, `assoc${i}`, 40)));

      const status = JSON.parse((await fetchText(`${admin}/api/status`)).body) as Status;
      const udpSessions = status.sessions.filter((s) => s.command === 'udp');
      assert.equal(udpSessions.length, 16);
      assert.equal(status.totals.deliveredDatagrams, 16 * 40, 'every echo delivered');
      assert.equal(status.totals.dropped, 0, `no drops: ${JSON.stringify(status.drops)}`);
      const metrics = (await fetchText(`${admin}/metrics`)).body;
      const steered = metric(metrics, 'socksgate_udp_steered_total');
      const perWorker = status.workers.map((w) => udpSessions.filter((s) => s.worker === w.worker).length);
      if (nativeLoaded()) {
        // Each worker's own socket of the port: a client's datagrams read by a sibling are passed on until the worker
        // holding its association has a socket connected to it; after that first round trip they come straight there.
        assert.ok(steered <= open.length, `at most one datagram per association steered (${steered})`);
      } else if (perWorker.every((n) => n > 0)) {
        // Both workers read one shared socket: when both hold associations, some datagrams must have been passed on.
        assert.ok(steered > 0, `datagrams were steered between workers (${steered})`);
      }
      t.diagnostic(`associations per worker ${JSON.stringify(perWorker)}, datagrams steered between workers: ${steered}`);
      // Every worker knows its siblings' claims (8 declared endpoints and 8 learned ones in all; its own are in its demultiplexer).
      status.workers.forEach((w, i) => assert.deepEqual(w.claims, { known: 16 - perWorker[i]!, pending: 0 }, `worker ${w.worker}'s claim table`));
      assert.equal(status.claims, 16, "the primary's claim table");

      // Worker-side state returns to nothing once the associations end: no claim left in any table.
      release(open.splice(0));
      let after: Status | null = null;
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        after = JSON.parse((await fetchText(`${admin}/api/status`)).body) as Status;
        if (after.sessions.length === 0 && after.claims === 0 && after.workers.every((w) => w.claims?.known === 0)) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(after!.sessions.length, 0, 'every session ended');
      assert.equal(after!.claims, 0, "the primary's claim table is empty");
      for (const w of after!.workers) assert.deepEqual(w.claims, { known: 0, pending: 0 }, `worker ${w.worker}'s claim table is empty`);
    } finally {
      release(open);
      echo.close();
      await cli.stop();
    }
  });

  test('a worker that dies takes only its own associations; a new one replaces it', async () => {
    const echo = await startUdpEcho();
    const { cli, port, admin } = await startWorkers([]);
    running.push(cli);
    const open: Array<{ control: Peer; udp: UdpPeer; relayPort: number; client: string }> = [];
    try {
      // Open associations until both workers hold some (the kernel picks the worker that accepts).
      let status: Status | null = null;
      for (let i = 0; i < 40; i++) {
        const a = await associateFrom(port, '127.0.0.1', true);
        open.push({ ...a, client: `127.0.0.1:${a.control.socket.localPort}` });
        status = JSON.parse((await fetchText(`${admin}/api/status`)).body) as Status;
        const holders = new Set(status.sessions.filter((s) => s.command === 'udp').map((s) => s.worker));
        if (holders.size === 2 && i >= 3) break;
      }
      const ownerOf = new Map(status!.sessions.map((s) => [s.client, s.worker]));
      assert.equal(new Set(ownerOf.values()).size, 2, 'associations on both workers');
      const victim = status!.workers.find((w) => w.worker === 1)!;
      const doomed = open.filter((a) => ownerOf.get(a.client) === 1);
      const survivors = open.filter((a) => ownerOf.get(a.client) === 2);

      process.kill(victim.pid, 'SIGKILL');
      for (const a of doomed) await a.control.closed(5000);
      await Promise.all(survivors.map((a, i) => roundTrips(a, echo.port, `survivor${i}`, 10)));
      for (const a of survivors) assert.equal(a.control.socket.destroyed, false, 'the other worker\'s control connections stay open');

      await cli.waitForLine((l) => l.msg === 'worker restarted and listening', 10000);
      const again = await associateFrom(port, '127.0.0.1', true);
      open.push({ ...again, client: '' });
      await roundTrips(again, echo.port, 'again', 5);
      const metrics = (await fetchText(`${admin}/metrics`)).body;
      assert.equal(metric(metrics, 'socksgate_workers'), 2);
      assert.equal(metric(metrics, 'socksgate_worker_restarts_total'), 1);
    } finally {
      release(open);
      echo.close();
      await cli.stop();
    }
  });

  test('the primary: /readyz says 503 until every worker serves, /metrics answers with what it has', async () => {
    const { cli, admin } = await startWorkers([]);
    running.push(cli);
    let stopped: number | null = null;
    try {
      assert.equal((await fetchText(`${admin}/readyz`)).status, 200);
      const status = JSON.parse((await fetchText(`${admin}/api/status`)).body) as Status;
      const victim = status.workers.find((w) => w.worker === 1)!;
      // A worker that cannot answer (stopped): the scrape leaves it out instead of failing.
      process.kill(victim.pid, 'SIGSTOP');
      stopped = victim.pid;
      const partial = await fetchText(`${admin}/metrics`);
      assert.equal(partial.status, 200, partial.body);
      assert.doesNotMatch(partial.body, /timed out/i);
      assert.equal(metric(partial.body, 'socksgate_workers'), 2);
      assert.ok(partial.body.includes('socksgate_udp_dropped_total{reason="kernel-overflow"}'), 'the serving worker\'s metrics are in');
      // Gone: not ready until its replacement serves; metrics meanwhile come from the one left.
      process.kill(victim.pid, 'SIGKILL');
      stopped = null;
      await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('worker 1 exited'), 10_000);
      const restarted = (): boolean => cli.lines.some((l) => l.msg === 'worker restarted and listening');
      const during = await fetchText(`${admin}/readyz`);
      if (!restarted()) assert.equal(during.status, 503, 'not ready while a worker restarts');
      const metricsDuring = await fetchText(`${admin}/metrics`);
      assert.equal(metricsDuring.status, 200, metricsDuring.body);
      await cli.waitForLine((l) => l.msg === 'worker restarted and listening', 15_000);
      assert.equal((await fetchText(`${admin}/readyz`)).status, 200);
      assert.equal(metric((await fetchText(`${admin}/metrics`)).body, 'socksgate_workers'), 2);
    } finally {
      if (stopped !== null) process.kill(stopped, 'SIGKILL');
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });
});
