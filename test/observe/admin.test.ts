import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AdminServer } from '../../src/observe/admin.js';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startDnsmasq, startEcho, startSocks } from '../helpers/servers.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

/** The value of one sample of a Prometheus text exposition ("name{labels}" exactly as written). */
function metric(text: string, sample: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  assert.ok(line, `${sample} is in /metrics`);
  return Number(line.slice(sample.length + 1));
}

describe('admin listener: metrics after real traffic, health', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let admin: AdminServer;
  let base: string;
  before(async () => {
    dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'] });
    echo = await startEcho();
    udpEcho = await startUdpEcho();
    socks = await startSocks({
      dnsServers: [dns.server],
      users: UserStore.fromEntries([['ann', await hashPassword(Buffer.from('pw'), 10)]]),
      rules: [{ action: 'deny', name: 'no-9', ports: [9] }],
    });
    admin = new AdminServer(socks.server);
    const bound = await admin.listen('127.0.0.1', 0);
    base = `http://127.0.0.1:${bound.port}`;
  });
  after(async () => {
    udpEcho.close();
    await admin.close();
    await Promise.all([socks.close(), echo.close(), dns.close()]);
  });

  test('exact counts for a known set of sessions and datagrams', async () => {
    const ann = { user: 'ann', pass: 'pw' };
    // One CONNECT that relays 5 bytes, one denied by a rule, one failed login.
    const tcp = await Peer.connect(socks.port);
    await handshake(tcp, ann);
    tcp.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(tcp)).code, 0);
    tcp.write('hello');
    await tcp.read(5);
    tcp.destroy();
    const denied = await Peer.connect(socks.port);
    await handshake(denied, ann);
    denied.write(request(1, '127.0.0.1', 9));
    assert.equal((await readReply(denied)).code, 0x02);
    denied.destroy();
    const wrong = await Peer.connect(socks.port);
    wrong.write(Buffer.concat([greeting(2), userPass('ann', 'nope')]));
    await wrong.readToEnd();

    // One association: 4 whole datagrams (one by name), a 2-fragment sequence, 2 malformed ones.
    const a = await openAssociation(socks.port, { credentials: ann });
    for (const size of [10, 20, 30]) {
      await a.sendTo('127.0.0.1', udpEcho.port, Buffer.alloc(size, 1));
      await a.udp.receive();
    }
    await a.sendTo('echo.test', udpEcho.port, Buffer.alloc(40, 2));
    await a.udp.receive();
    await a.sendTo('127.0.0.1', udpEcho.port, Buffer.alloc(5, 3), 1);
    await a.sendTo('127.0.0.1', udpEcho.port, Buffer.alloc(5, 4), 0x82);
    assert.equal(unwrap((await a.udp.receive()).data).data.length, 10);
    await a.udp.send(Buffer.from([0, 0, 0]), a.reply.port, a.reply.host);
    await a.udp.send(Buffer.from([0, 0, 0, 9, 1]), a.reply.port, a.reply.host);
    await waitFor(() => socks.server.udpStats.drops.malformed === 2, 2000, 'the malformed datagrams');
    await waitFor(() => socks.server.sessionCount === 1, 3000, 'the TCP sessions to end');

    const text = await (await fetch(`${base}/metrics`)).text();
    assert.equal(metric(text, 'socksgate_sessions_active{command="udp"}'), 1);
    assert.equal(metric(text, 'socksgate_sessions_active{command="connect"}'), 0);
    assert.equal(metric(text, 'socksgate_tcp_connections_total'), 4);
    assert.equal(metric(text, 'socksgate_sessions_total{command="connect"}'), 2);
    assert.equal(metric(text, 'socksgate_sessions_total{command="-"}'), 1);
    assert.equal(metric(text, 'socksgate_session_duration_seconds_count{command="connect"}'), 2);
    assert.equal(metric(text, 'socksgate_auth_failures_total'), 1);
    assert.equal(metric(text, 'socksgate_rule_denials_total'), 1);
    assert.equal(metric(text, 'socksgate_udp_associations_active'), 1);
    assert.equal(metric(text, 'socksgate_udp_associations_total'), 1);
    assert.equal(metric(text, 'socksgate_udp_datagrams_total{direction="client_to_proxy"}'), 8);
    assert.equal(metric(text, 'socksgate_udp_datagrams_total{direction="proxy_to_destination"}'), 5);
    assert.equal(metric(text, 'socksgate_udp_datagrams_total{direction="destination_to_proxy"}'), 5);
    assert.equal(metric(text, 'socksgate_udp_datagrams_total{direction="proxy_to_client"}'), 5);
    assert.equal(metric(text, 'socksgate_udp_bytes_total{direction="proxy_to_destination"}'), 10 + 20 + 30 + 40 + 10);
    assert.equal(metric(text, 'socksgate_udp_bytes_total{direction="proxy_to_client"}'), 110);
    assert.equal(metric(text, 'socksgate_udp_dropped_total{reason="malformed"}'), 2);
    assert.equal(metric(text, 'socksgate_udp_dropped_total{reason="filtered"}'), 0);
    assert.equal(metric(text, 'socksgate_udp_fragments_total'), 2);
    assert.equal(metric(text, 'socksgate_udp_reassemblies_total'), 1);
    assert.equal(metric(text, 'socksgate_dns_lookups_total{result="ok"}'), 1);
    assert.equal(metric(text, 'socksgate_dns_lookup_duration_seconds_count'), 1);
    assert.ok(text.includes('# TYPE socksgate_session_duration_seconds histogram'));
    assert.ok(!/client="/.test(text), 'no per-client labels');

    const status = (await (await fetch(`${base}/api/status`)).json()) as { sessions: Array<Record<string, unknown>> };
    const udp = status.sessions.find((s) => s.command === 'udp')!;
    assert.equal(udp.user, 'ann');
    assert.deepEqual([udp.datagramsUp, udp.datagramsDown, udp.destinationCount], [5, 5, 1]);
    assert.deepEqual(udp.destinations, [`127.0.0.1:${udpEcho.port}`]);
    a.close();
  });

  test('health and readiness; readiness turns false while draining', async () => {
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    const other = await startSocks();
    const otherAdmin = new AdminServer(other.server);
    const { port } = await otherAdmin.listen('127.0.0.1', 0);
    try {
      const live = await Peer.connect(other.port);
      await handshake(live);
      live.write(request(1, '127.0.0.1', echo.port));
      await readReply(live);
      const draining = other.server.drain(10_000);
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 503);
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
      // Still relaying while draining.
      live.write('during drain');
      assert.equal((await live.read(12)).toString(), 'during drain');
      await assert.rejects(Peer.connect(other.port), { code: 'ECONNREFUSED' });
      live.destroy();
      assert.equal(await draining, 0, 'no session had to be cut');
    } finally {
      await otherAdmin.close();
      await other.close();
    }
  });
});
