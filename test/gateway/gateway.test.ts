import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { associate } from 'socksgate-client';
import { createGateway, type GatewayOptions } from '../../src/gateway/gateway.js';
import { createMetrics } from '../../src/observe/metrics.js';
import { SocksServer, type UpstreamSnapshot } from '../../src/server/server.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { freeTcpUdpPort, startDante, startEcho } from '../helpers/servers.js';
import { greeting, handshake, readReply, request } from '../helpers/socks-bytes.js';
import { hashPassword, UserStore } from '../../src/server/users.js';
import { UdpPeer, startUdpEcho, unwrap, wrap } from '../helpers/udp.js';

// Two real upstreams (a socksgate and Dante) behind a gateway socksgate. Distinct clients are
// distinct loopback source addresses (127.0.0.x).

const CLIENTS = Array.from({ length: 20 }, (_, i) => `127.0.0.${i + 2}`);

type Gateway = { server: SocksServer; port: number; close(): Promise<void> };

/** Sockets a test opened, closed in its finally even when an assertion failed. */
const opened = new Set<{ destroy?(): void; close?(): void }>();
function closeOpened(): void {
  for (const o of opened) o.destroy ? o.destroy() : o.close?.();
  opened.clear();
}

async function startGateway(upstreams: string[], options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const server = createGateway(
    { listen: [{ host: '127.0.0.1', port: 0 }], connectTimeoutMs: 3000 },
    { upstreams, healthIntervalMs: 100, healthTimeoutMs: 5000, healthFailures: 2, ...options },
  );
  const [bound] = await server.listen();
  return { server, port: bound!.port, close: () => server.close() };
}

function upstreamOf(gateway: Gateway, name: string): UpstreamSnapshot {
  const found = gateway.server.upstreams().find((u) => u.upstream === name);
  assert.ok(found, `no upstream ${name} in ${JSON.stringify(gateway.server.upstreams())}`);
  return found;
}

/** A CONNECT through the gateway from `client` (a source address); returns the peer and the reply code. */
async function connectFrom(gatewayPort: number, client: string, port: number): Promise<{ peer: Peer; code: number }> {
  const peer = await Peer.connect(gatewayPort, '127.0.0.1', client);
  opened.add(peer);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', port));
  const reply = await readReply(peer, 5000);
  return { peer, code: reply.code };
}

/** Bytes through an open CONNECT come back byte for byte from the echo target. */
async function echoes(peer: Peer): Promise<void> {
  const payload = randomBytes(4096);
  peer.write(payload);
  assert.deepEqual(await peer.read(payload.length, 5000), payload);
}

/** A UDP ASSOCIATE through the gateway from `client`, control and UDP socket on that address. */
async function associateFrom(gatewayPort: number, client: string): Promise<{ control: Peer; udp: UdpPeer; code: number; relay: { host: string; port: number }; close(): void }> {
  const udp = await UdpPeer.bind(client);
  opened.add(udp);
  const control = await Peer.connect(gatewayPort, '127.0.0.1', client);
  opened.add(control);
  await handshake(control);
  control.write(request(3, '0.0.0.0', udp.port));
  const reply = await readReply(control, 5000);
  return {
    control,
    udp,
    code: reply.code,
    relay: { host: reply.host, port: reply.port },
    close() {
      control.destroy();
      udp.close();
    },
  };
}

/** A UDP round trip to the echo target through an association; checks payload and reported source byte for byte. */
async function udpEchoes(association: Awaited<ReturnType<typeof associateFrom>>, echoPort: number): Promise<void> {
  const payload = randomBytes(1200);
  // The upstream association may still be being set up: the gateway holds what comes meanwhile.
  await association.udp.send(wrap('127.0.0.1', echoPort, payload), association.relay.port, association.relay.host);
  const back = unwrap((await association.udp.receive(5000)).data);
  assert.equal(back.frag, 0);
  assert.equal(back.host, '127.0.0.1');
  assert.equal(back.port, echoPort);
  assert.deepEqual(back.data, payload);
}

/** A CONNECT and a UDP ASSOCIATE from `client` through the gateway, each checked with a byte-exact echo. */
async function connectAndAssociate(gatewayPort: number, client: string, echoPort: number, udpEchoPort: number) {
  const tcp = await connectFrom(gatewayPort, client, echoPort);
  assert.equal(tcp.code, 0);
  await echoes(tcp.peer);
  const udp = await associateFrom(gatewayPort, client);
  assert.equal(udp.code, 0);
  await udpEchoes(udp, udpEchoPort);
  return { tcp, udp };
}

describe('gateway mode: sessions carried to upstream SOCKS5 servers', () => {
  let dante: Awaited<ReturnType<typeof startDante>>;
  let upstream: SocksServer;
  let upstreamPort: number;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  let ours: string;
  let theirs: string;
  /** Which upstream hash selection gives each client (learned once, through the gateway). */
  const placed = new Map<string, string>();

  const urls = (): string[] => [`socks5://127.0.0.1:${upstreamPort}`, `socks5://127.0.0.1:${dante.port}`];
  const startUpstream = async (port: number): Promise<void> => {
    upstream = new SocksServer({ listen: [{ host: '127.0.0.1', port }], allowLoopbackTargets: true });
    upstreamPort = (await upstream.listen())[0]!.port;
  };

  before(async () => {
    dante = await startDante();
    await startUpstream(0);
    echo = await startEcho();
    udpEcho = await startUdpEcho();
    ours = `127.0.0.1:${upstreamPort}`;
    theirs = `127.0.0.1:${dante.port}`;
  });
  after(async () => {
    await upstream.close();
    await dante.close();
    await echo.close();
    udpEcho.close();
  });

  test('hash selection: CONNECT byte-exact through both upstreams, distinct clients spread, each client stays on one upstream', async () => {
    const gateway = await startGateway(urls());
    try {
      for (let round = 0; round < 3; round++) {
        for (const client of CLIENTS) {
          const before = { ours: upstreamOf(gateway, ours).sessionsTotal, theirs: upstreamOf(gateway, theirs).sessionsTotal };
          const { peer, code } = await connectFrom(gateway.port, client, echo.port);
          assert.equal(code, 0, `CONNECT from ${client}`);
          await echoes(peer);
          peer.destroy();
          const grew = upstreamOf(gateway, ours).sessionsTotal - before.ours === 1 ? ours : theirs;
          assert.equal(upstreamOf(gateway, ours).sessionsTotal + upstreamOf(gateway, theirs).sessionsTotal, before.ours + before.theirs + 1);
          if (round === 0) placed.set(client, grew);
          else assert.equal(grew, placed.get(client), `${client} moved from ${placed.get(client)} to ${grew}`);
        }
      }
      const counts = [...placed.values()].reduce((m, u) => m.set(u, (m.get(u) ?? 0) + 1), new Map<string, number>());
      assert.ok((counts.get(ours) ?? 0) > 0 && (counts.get(theirs) ?? 0) > 0, `20 clients all on one upstream: ${JSON.stringify([...counts])}`);
      await waitFor(() => gateway.server.upstreams().every((u) => u.sessionsActive === 0), 3000, 'the sessions to end');
      assert.equal(upstreamOf(gateway, ours).sessionsTotal + upstreamOf(gateway, theirs).sessionsTotal, 60);
    } finally {
      closeOpened();
      await gateway.close();
    }
  });

  test('UDP ASSOCIATE: datagrams byte-exact through a standard association to each upstream (socksgate and Dante)', async () => {
    const gateway = await startGateway(urls());
    try {
      for (const name of [ours, theirs]) {
        const client = CLIENTS.find((c) => placed.get(c) === name)!;
        const openedBefore = upstream.udpStats.associationsOpened;
        const association = await associateFrom(gateway.port, client);
        try {
          assert.equal(association.code, 0);
          assert.equal(association.relay.host, '127.0.0.1');
          for (let i = 0; i < 3; i++) await udpEchoes(association, udpEcho.port);
          assert.equal(upstreamOf(gateway, name).sessionsActive, 1);
          // The socksgate upstream served an association only when it was the one chosen.
          assert.equal(upstream.udpStats.associationsOpened - openedBefore, name === ours ? 1 : 0);
        } finally {
          association.close();
        }
        await waitFor(() => upstreamOf(gateway, name).sessionsActive === 0, 3000, 'the upstream association to close');
      }
      await waitFor(() => upstream.sessionCount === 0, 3000, 'the socksgate upstream to see its sessions end');
    } finally {
      closeOpened();
      await gateway.close();
    }
  });

  test('UDP over TCP (upstream.udp tcp) to the socksgate upstream', async () => {
    const gateway = await startGateway([`socks5://127.0.0.1:${upstreamPort}`], { udp: 'tcp' });
    try {
      const association = await associateFrom(gateway.port, CLIENTS[0]!);
      try {
        assert.equal(association.code, 0);
        for (let i = 0; i < 3; i++) await udpEchoes(association, udpEcho.port);
        assert.deepEqual(upstream.sessionsByCommand(), { 'udp-over-tcp': 1 });
      } finally {
        association.close();
      }
      await waitFor(() => upstream.sessionCount === 0, 3000, 'the UDP-over-TCP session upstream to end');
    } finally {
      closeOpened();
      await gateway.close();
    }
  });

  test('a client using UDP over TCP with the gateway is carried over a standard association to Dante', async () => {
    const gateway = await startGateway([`socks5://127.0.0.1:${dante.port}`]);
    const association = await associate({ proxy: `socks5://127.0.0.1:${gateway.port}`, transport: 'tcp' });
    try {
      for (let i = 0; i < 3; i++) {
        const payload = randomBytes(900);
        const reply = new Promise<{ payload: Buffer; from: { host: string; port: number } }>((resolve) => association.once('message', resolve));
        await association.send(payload, '127.0.0.1', udpEcho.port);
        const back = await reply;
        assert.deepEqual(back.payload, payload);
        assert.deepEqual([back.from.host, back.from.port], ['127.0.0.1', udpEcho.port]);
      }
      assert.equal(upstreamOf(gateway, theirs).sessionsActive, 1);
    } finally {
      association.close();
      closeOpened();
      await gateway.close();
    }
  });

  test('least-sessions: one client\'s sessions alternate between the upstreams', async () => {
    const gateway = await startGateway(urls(), { select: 'least-sessions' });
    const peers: Peer[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const { peer, code } = await connectFrom(gateway.port, CLIENTS[0]!, echo.port);
        peers.push(peer);
        assert.equal(code, 0);
        await echoes(peer);
      }
      assert.equal(upstreamOf(gateway, ours).sessionsActive, 2);
      assert.equal(upstreamOf(gateway, theirs).sessionsActive, 2);
    } finally {
      for (const peer of peers) peer.destroy();
      await gateway.close();
    }
  });

  test('the gateway\'s own login and rules stay in force: denials never reach an upstream', async () => {
    const server = createGateway(
      {
        listen: [{ host: '127.0.0.1', port: 0 }],
        users: UserStore.fromEntries([['amy', await hashPassword(Buffer.from('pw'), 10)]]),
        rules: [
          { action: 'deny', commands: ['connect'], destinations: ['blocked.test'] },
          { action: 'deny', commands: ['udp'], ports: [udpEcho.port] },
        ],
      },
      { upstreams: [`socks5://127.0.0.1:${upstreamPort}`], healthIntervalMs: 100 },
    );
    const port = (await server.listen())[0]!.port;
    try {
      const anonymous = await Peer.connect(port);
      opened.add(anonymous);
      anonymous.write(greeting(0));
      assert.deepEqual([...(await anonymous.read(2))], [5, 0xff]);
      const credentials = { user: 'amy', pass: 'pw' };
      const denied = await Peer.connect(port);
      opened.add(denied);
      await handshake(denied, credentials);
      denied.write(request(1, 'blocked.test', 80));
      assert.equal((await readReply(denied)).code, 2);
      assert.equal(server.upstreams()[0]!.sessionsTotal, 0);
      assert.equal(server.stats.denied, 1);

      const udp = await UdpPeer.bind('127.0.0.1');
      opened.add(udp);
      const control = await Peer.connect(port);
      opened.add(control);
      await handshake(control, credentials);
      control.write(request(3, '0.0.0.0', udp.port));
      const reply = await readReply(control);
      assert.equal(reply.code, 0);
      const other = await startUdpEcho();
      try {
        // Denied by port: dropped at the gateway and counted; the allowed destination echoes.
        await udp.send(wrap('127.0.0.1', udpEcho.port, Buffer.from('denied')), reply.port, reply.host);
        const payload = randomBytes(500);
        await udp.send(wrap('127.0.0.1', other.port, payload), reply.port, reply.host);
        const back = unwrap((await udp.receive(5000)).data);
        assert.deepEqual([back.port, back.data], [other.port, payload]);
        await waitFor(() => server.udpStats.drops.denied === 1, 3000, 'the denied datagram to be counted');
        assert.equal(other.received(), 1);
        await udp.nothingFor(200);
      } finally {
        other.close();
      }
    } finally {
      closeOpened();
      await server.close();
    }
  });

  test('no socket or timer is left behind once sessions and the gateway are closed', async () => {
    const kinds = ['TCPSocketWrap', 'TCPServerWrap', 'UDPWrap', 'Timeout'];
    const count = (): string => {
      const all = process.getActiveResourcesInfo();
      return kinds.map((k) => `${k}=${all.filter((r) => r === k).length}`).join(' ');
    };
    // What earlier tests closed may still be going away: the baseline is the count once it holds still.
    const settled = async (): Promise<string> => {
      let last = count();
      for (let same = 0, polls = 0; same < 5 && polls < 60; polls++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        const now = count();
        same = now === last ? same + 1 : 0;
        last = now;
      }
      return last;
    };
    const baseline = await settled();
    const gateway = await startGateway(urls());
    try {
      for (const name of [ours, theirs]) {
        const client = CLIENTS.find((c) => placed.get(c) === name)!;
        await connectAndAssociate(gateway.port, client, echo.port, udpEcho.port);
      }
      assert.notEqual(count(), baseline);
    } finally {
      closeOpened();
      await gateway.close();
    }
    await waitFor(() => upstream.sessionCount === 0, 3000, 'the socksgate upstream to see its sessions end');
    let now = count();
    await waitFor(() => (now = count()) === baseline, 3000, 'resources back to the baseline').catch(() => assert.equal(now, baseline));
  });

  test('BIND through the upstream\'s BIND (socksgate and Dante): both replies passed on, then a byte-exact relay', async () => {
    const gateway = await startGateway(urls());
    try {
      for (const name of [ours, theirs]) {
        const client = CLIENTS.find((c) => placed.get(c) === name)!;
        const peer = await Peer.connect(gateway.port, '127.0.0.1', client);
        opened.add(peer);
        await handshake(peer);
        peer.write(request(2, '127.0.0.1', 0));
        const first = await readReply(peer, 5000);
        assert.equal(first.code, 0, `first BIND reply via ${name}`);
        assert.equal(first.host, '127.0.0.1');
        assert.equal(upstreamOf(gateway, name).sessionsActive, 1);
        // The other side connects to where the upstream listens.
        const incoming = await Peer.connect(first.port, '127.0.0.1');
        opened.add(incoming);
        const second = await readReply(peer, 5000);
        assert.equal(second.code, 0);
        assert.deepEqual([second.host, second.port], ['127.0.0.1', incoming.socket.localPort]);
        const up = randomBytes(3000);
        const down = randomBytes(2000);
        peer.write(up);
        incoming.write(down);
        assert.deepEqual(await incoming.read(up.length, 5000), up);
        assert.deepEqual(await peer.read(down.length, 5000), down);
        incoming.destroy();
        await peer.closed(5000);
        await waitFor(() => upstreamOf(gateway, name).sessionsActive === 0, 3000, 'the BIND session to end');
        // A client that goes away while waiting ends its BIND (and the upstream's) at once, not at bindTimeout (60 s).
        const leaving = await Peer.connect(gateway.port, '127.0.0.1', client);
        await handshake(leaving);
        leaving.write(request(2, '127.0.0.1', 0));
        assert.equal((await readReply(leaving, 5000)).code, 0);
        assert.equal(upstreamOf(gateway, name).sessionsActive, 1);
        leaving.end();
        await waitFor(() => upstreamOf(gateway, name).sessionsActive === 0 && gateway.server.sessionCount === 0, 10_000, `the BIND via ${name} to end with its client`);
      }
    } finally {
      closeOpened();
      await gateway.close();
    }
  });

  test('no upstream up: CONNECT and UDP ASSOCIATE get 0x01', async () => {
    const gateway = await startGateway([`socks5://127.0.0.1:${await freeTcpUdpPort()}`], { healthFailures: 1 });
    try {
      await waitFor(() => gateway.server.upstreams()[0]!.up === false, 3000, 'the upstream to be marked down');
      const { peer, code } = await connectFrom(gateway.port, CLIENTS[0]!, echo.port);
      assert.equal(code, 1);
      await peer.closed();
      const association = await associateFrom(gateway.port, CLIENTS[0]!);
      assert.equal(association.code, 1);
      association.close();
    } finally {
      closeOpened();
      await gateway.close();
    }
  });

  test('the socksgate upstream stops accepting: taken out, its sessions closed, clients move to Dante, and back when it returns', async () => {
    const gateway = await startGateway(urls());
    const metrics = createMetrics(gateway.server);
    const metric = async (name: string, upstreamName: string): Promise<number> => {
      const text = await metrics.metrics();
      const line = text.split('\n').find((l) => l.startsWith(`${name}{upstream="${upstreamName}"`));
      assert.ok(line, `no ${name} for ${upstreamName} in:\n${text}`);
      return Number(line.split(' ').pop());
    };
    const client = CLIENTS.find((c) => placed.get(c) === ours)!;
    try {
      await waitFor(() => upstreamOf(gateway, ours).healthCheckSeconds !== null, 3000, 'a first health check');
      assert.equal(await metric('socksgate_upstream_up', ours), 1);
      const { tcp, udp } = await connectAndAssociate(gateway.port, client, echo.port, udpEcho.port);
      assert.equal(await metric('socksgate_upstream_sessions_active', ours), 2);

      // The upstream stops accepting but keeps its live sessions: only the gateway's health checks can tell.
      const port = upstreamPort;
      const drained = upstream.drain(20_000);
      await tcp.peer.closed(5000);
      await udp.control.closed(5000);
      udp.close();
      assert.equal(upstreamOf(gateway, ours).up, false);
      assert.equal(await metric('socksgate_upstream_up', ours), 0);
      assert.equal(await metric('socksgate_upstream_sessions_active', ours), 0);
      assert.ok((await metric('socksgate_upstream_failures_total', ours)) >= 2);
      // The gateway closed its upstream connections, so the upstream's drain had nothing to cut.
      assert.equal(await drained, 0);

      const moved = await connectFrom(gateway.port, client, echo.port);
      assert.equal(moved.code, 0);
      await echoes(moved.peer);
      assert.equal(upstreamOf(gateway, theirs).sessionsActive, 1);
      moved.peer.destroy();

      await startUpstream(port);
      await waitFor(() => upstreamOf(gateway, ours).up, 5000, 'the upstream to come back');
      assert.equal(await metric('socksgate_upstream_up', ours), 1);
      const back = await connectFrom(gateway.port, client, echo.port);
      assert.equal(back.code, 0);
      await echoes(back.peer);
      assert.equal(upstreamOf(gateway, ours).sessionsActive, 1);
      back.peer.destroy();
      await waitFor(() => upstream.sessionCount === 0, 3000, 'the upstream to see the session end');
    } finally {
      closeOpened();
      await gateway.close();
    }
    // Closing the gateway ended every session and health check it had: the upstream is idle.
    assert.equal(gateway.server.sessionCount, 0);
    assert.ok(gateway.server.upstreams().every((u) => u.sessionsActive === 0));
  });

  test('Dante stopped mid-test: its sessions end, its clients go to the socksgate upstream, health shows it down', async () => {
    const gateway = await startGateway(urls());
    const client = CLIENTS.find((c) => placed.get(c) === theirs)!;
    try {
      const { tcp, udp } = await connectAndAssociate(gateway.port, client, echo.port, udpEcho.port);
      await dante.close();
      await tcp.peer.closed(5000);
      await udp.control.closed(5000);
      udp.close();
      await waitFor(() => !upstreamOf(gateway, theirs).up, 5000, 'Dante to be marked down');
      assert.equal(upstreamOf(gateway, theirs).sessionsActive, 0);
      const sessionsBefore = upstreamOf(gateway, ours).sessionsTotal;
      const moved = await connectFrom(gateway.port, client, echo.port);
      assert.equal(moved.code, 0);
      await echoes(moved.peer);
      moved.peer.destroy();
      const movedUdp = await associateFrom(gateway.port, client);
      assert.equal(movedUdp.code, 0);
      await udpEchoes(movedUdp, udpEcho.port);
      movedUdp.close();
      assert.equal(upstreamOf(gateway, ours).sessionsTotal - sessionsBefore, 2);
    } finally {
      closeOpened();
      await gateway.close();
    }
  });
});
