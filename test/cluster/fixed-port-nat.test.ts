import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { CLI } from '../helpers/cli.js';
import { NetnsLab, requireNetns, type NsProcess } from '../helpers/netns.js';
import { requireProgram } from '../helpers/servers.js';

// A client behind a NAT that maps its UDP apart from its TCP, and a fixed-port server with two workers,
// in network namespaces this test makes:
//
//   nat (10.77.0.2, 10.77.0.3; nftables SNAT of its UDP) ── veth ── srv (10.77.0.1: socksgate, UDP echo on 127.0.0.1)
//
// The control connection leaves with the client's own address and port; its UDP leaves with a port the
// NAT picks (2000-2999), which the client cannot know, so it declares none and the server learns it
// from the first datagram. Whichever worker the kernel hands a datagram to, it must reach the worker
// holding the association (the steering between workers), byte for byte.
const PEER = fileURLToPath(new URL('../helpers/netns-peer.js', import.meta.url));
const SERVER = '10.77.0.1';
const CLIENT = '10.77.0.2';
const OTHER = '10.77.0.3';
const ECHO = { host: '127.0.0.1', port: 7007 };
const NAT_PORTS = [2000, 2999] as const;
const ASSOCIATIONS = 12;
const ROUND_TRIPS = 10;

interface Status {
  sessions: Array<{ client: string; command: string; worker: number; udpClient?: string }>;
  totals: { deliveredDatagrams: number; dropped: number };
  drops: Record<string, number>;
  workers: Array<{ worker: number }>;
}

test('fixed-port workers: a client whose UDP leaves a NAT from another port than its TCP gets every echo; UDP from another address is dropped', { timeout: 180_000 }, async (t) => {
  requireNetns();
  const nft = requireProgram('nft', 'nftables');
  requireProgram('curl', 'curl');
  const lab = new NetnsLab('nat');
  try {
    const srv = lab.add('srv');
    const nat = lab.add('nat');
    lab.ip(srv, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nat);
    lab.ip(srv, 'addr', 'add', `${SERVER}/24`, 'dev', 'eth0');
    lab.ip(srv, 'link', 'set', 'eth0', 'up');
    lab.ip(nat, 'addr', 'add', `${CLIENT}/24`, 'dev', 'eth0');
    lab.ip(nat, 'addr', 'add', `${OTHER}/24`, 'dev', 'eth0');
    lab.ip(nat, 'link', 'set', 'eth0', 'up');
    const snat = (to: string): void => {
      lab.exec(nat, nft, ['flush', 'ruleset']);
      lab.exec(nat, nft, ['-f', '-'], `table ip socksgate_test {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "eth0" meta l4proto udp snat to ${to}\n  }\n}\n`);
    };
    snat(`${CLIENT}:${NAT_PORTS[0]}-${NAT_PORTS[1]}`);

    const echo = lab.spawn(srv, process.execPath, [PEER, 'echo', ECHO.host, String(ECHO.port)]);
    await echo.waitForLine((l) => l.ready === true, 10_000, 'the echo ready');
    const server = lab.spawn(srv, process.execPath, [CLI, 'serve', '--listen', `${SERVER}:1080`, '--allow-open', '--allow-loopback-targets', '--workers', '2', '--udp-port', '1080',
      '--admin', '127.0.0.1:9090', '--log-format', 'json']);
    await server.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes(`listening on ${SERVER}:1080`), 60_000, 'socksgate listening');
    // curl runs without the sanitizer pass's LD_PRELOAD (an AddressSanitizer runtime in curl stalls it).
    const admin = (path: string): string => lab.exec(srv, 'env', ['-u', 'LD_PRELOAD', 'curl', '-sS', '--max-time', '3', `http://127.0.0.1:9090${path}`]);
    const status = (): Status => JSON.parse(admin('/api/status')) as Status;
    const steered = (): number => {
      const text = admin('/metrics');
      const line = text.split('\n').find((l) => l.startsWith('socksgate_udp_steered_total '));
      assert.ok(line, 'socksgate_udp_steered_total is exported');
      return Number(line.split(' ')[1]);
    };

    // One association at a time: each declares no port, and two waiting from one address at once would be ambiguous.
    const clients: NsProcess[] = [];
    for (let i = 0; i < ASSOCIATIONS; i++) {
      const client = lab.spawn(nat, process.execPath, [PEER, 'client', `n${i}`, SERVER, '1080', ECHO.host, String(ECHO.port)]);
      clients.push(client);
      const opened = await client.request({ op: 'open', declarePort: false }, 10_000);
      assert.equal(opened.relay, `${SERVER}:1080`, 'the association shares the fixed port');
      const round = await client.request({ op: 'echo', count: ROUND_TRIPS }, 30_000);
      assert.deepEqual([round.sent, round.echoed], [ROUND_TRIPS, ROUND_TRIPS], `association ${i}: every round trip byte-exact`);
    }
    const seen = status();
    const udp = seen.sessions.filter((s) => s.command === 'udp');
    assert.equal(udp.length, ASSOCIATIONS);
    for (const s of udp) {
      // The control connection came from the client's own port; its UDP from one the NAT chose.
      assert.ok(s.client.startsWith(`${CLIENT}:`), `control connection from ${s.client}`);
      const udpPort = Number(s.udpClient?.split(':')[1]);
      assert.ok(s.udpClient?.startsWith(`${CLIENT}:`) && udpPort >= NAT_PORTS[0] && udpPort <= NAT_PORTS[1], `UDP from the NAT's port range: ${s.udpClient}`);
      assert.notEqual(s.client, s.udpClient, 'TCP and UDP endpoints differ');
    }
    assert.equal(seen.totals.deliveredDatagrams, ASSOCIATIONS * ROUND_TRIPS, 'every echo delivered');
    assert.equal(seen.totals.dropped, 0, `no drops: ${JSON.stringify(seen.drops)}`);
    const perWorker = seen.workers.map((w) => udp.filter((s) => s.worker === w.worker).length);
    const passedOn = steered();
    t.diagnostic(`associations per worker ${JSON.stringify(perWorker)}, datagrams steered between workers: ${passedOn}`);
    // With associations on both workers, a datagram of at least one of them reached the other worker first
    // (the kernel spreads senders over the workers' sockets by address and port: all 12 on their own
    // worker by chance is a 1 in 4096 event).
    if (perWorker.every((n) => n > 0)) assert.ok(passedOn > 0, `datagrams were steered between workers (${passedOn})`);

    // A NAT that maps UDP to another address: the association's source check drops it, never guessing.
    snat(OTHER);
    const stranger = lab.spawn(nat, process.execPath, [PEER, 'client', 'x', SERVER, '1080', ECHO.host, String(ECHO.port)]);
    clients.push(stranger);
    await stranger.request({ op: 'open', declarePort: false }, 10_000);
    const result = await stranger.request({ op: 'echo', count: 3, timeoutMs: 500 }, 10_000);
    assert.equal(result.echoed, 0, 'no echo for UDP from an address other than the control connection\'s');
    const after = status();
    assert.equal(after.totals.deliveredDatagrams, ASSOCIATIONS * ROUND_TRIPS, 'nothing delivered to anyone for it');
    assert.equal(after.drops['unknown-client'], 3, `its datagrams dropped as from an unknown client: ${JSON.stringify(after.drops)}`);
    for (const c of clients) await lab.kill(c, 'SIGTERM');
  } finally {
    await lab.close();
  }
});
