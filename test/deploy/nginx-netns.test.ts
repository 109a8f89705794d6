import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { CLI } from '../helpers/cli.js';
import { NetnsLab, requireNetns, type NsProcess } from '../helpers/netns.js';
import { waitFor } from '../helpers/peer.js';
import { requireProgram } from '../helpers/servers.js';

// Several socksgate instances behind nginx stream, in network namespaces this test makes:
//
//   c1..c6 (10.0.1.11-16) ── brc 10.0.1.1 [lb: nginx, UDP echo on 10.0.0.1:7007] 10.0.0.1 brb ── b1..b3 (10.0.0.11-13)
//
// nginx runs the shipped recipe (deploy/nginx/socksgate-stream.conf) unchanged: the instances'
// addresses in the test are the recipe's. The routing is the shipped transparent-routing.sh, run in
// lb and in each instance. Each instance is in fixed-port mode (UDP 1080) advertising 10.0.1.1, and
// its admin listener (127.0.0.1:9090 inside its namespace) says which clients it serves (summed
// over its workers).
const deploy = fileURLToPath(new URL('../../../deploy/nginx/', import.meta.url));
const PEER = fileURLToPath(new URL('../helpers/netns-peer.js', import.meta.url));
const BALANCER = '10.0.1.1';
const ECHO = { host: '10.0.0.1', port: 7007 };
const INSTANCES = ['10.0.0.11', '10.0.0.12', '10.0.0.13'];
// Six client addresses; nginx's consistent hash of these spreads them over all three instances.
const CLIENTS = ['10.0.1.11', '10.0.1.12', '10.0.1.13', '10.0.1.14', '10.0.1.15', '10.0.1.16'];
const ROUND_TRIPS = 5;

interface Client {
  readonly name: string;
  readonly ip: string;
  readonly namespace: string;
  readonly driver: NsProcess;
  localPort: number;
}

interface Instance {
  readonly name: string;
  readonly ip: string;
  readonly namespace: string;
  readonly process: NsProcess;
}

interface AssociationView {
  client: string;
  command: string;
  udpClient: string;
  datagramsUp: number;
  datagramsDown: number;
}

interface Status {
  sessions: AssociationView[];
  totals: { associations: number; clientDatagrams: number; deliveredDatagrams: number; dropped: number };
  drops: Record<string, number>;
}

interface Topology {
  readonly instances: Instance[];
  readonly clients: Client[];
  status(instance: Instance): Status;
  associationsOf(instance: Instance, client: Client): AssociationView[];
  /** A new association from a new UDP socket (retried while nginx starts or finds an instance gone). */
  open(client: Client, options?: { reassociate?: boolean; declarePort?: boolean }): Promise<void>;
}

/**
 * The namespaces, the UDP echo in lb, the instances and nginx (with `nginxConf`). With `transparent`,
 * the shipped transparent-routing.sh runs in lb and in each instance.
 */
async function startTopology(lab: NetnsLab, dir: string, nginxConf: string, options: { transparent: boolean; instances: string[]; clients: string[] }): Promise<Topology> {
  const nginx = requireProgram('nginx', 'nginx-light libnginx-mod-stream');
  const lb = lab.add('lb');
  lab.ip(lb, 'link', 'add', 'brc', 'type', 'bridge');
  lab.ip(lb, 'link', 'add', 'brb', 'type', 'bridge');
  lab.ip(lb, 'addr', 'add', `${BALANCER}/24`, 'dev', 'brc');
  lab.ip(lb, 'addr', 'add', '10.0.0.1/24', 'dev', 'brb');
  lab.ip(lb, 'link', 'set', 'brc', 'up');
  lab.ip(lb, 'link', 'set', 'brb', 'up');
  const attach = (name: string, bridge: string, ip: string): string => {
    const namespace = lab.add(name);
    lab.ip(lb, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace);
    lab.ip(lb, 'link', 'set', name, 'master', bridge, 'up');
    lab.ip(namespace, 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
    lab.ip(namespace, 'link', 'set', 'eth0', 'up');
    return namespace;
  };
  const script = join(deploy, 'transparent-routing.sh');
  if (options.transparent) lab.exec(lb, 'sh', [script, 'balancer', '10.0.0.0/24']);

  const echo = lab.spawn(lb, process.execPath, [PEER, 'echo', ECHO.host, String(ECHO.port)]);
  await echo.waitForLine((l) => l.ready === true, 30_000, 'the UDP echo');
  const instances: Instance[] = options.instances.map((ip, i) => {
    const name = `b${i + 1}`;
    const namespace = attach(name, 'brb', ip);
    if (options.transparent) lab.exec(namespace, 'sh', [script, 'instance', '10.0.0.1']);
    // Two workers each (not one per core: the same on every machine), so datagrams read by the
    // wrong worker are passed within the instance too; killing the primary ends its workers.
    const args = ['serve', '--listen', '0.0.0.0:1080', '--allow-open', '--workers', '2', '--udp-port', '1080', '--udp-advertise', BALANCER, '--admin', '127.0.0.1:9090', '--log-format', 'json'];
    return { name, ip, namespace, process: lab.spawn(namespace, process.execPath, [CLI, ...args]) };
  });
  for (const instance of instances) await instance.process.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 0.0.0.0:1080'), 60_000, 'socksgate listening');
  const balancer = lab.spawn(lb, nginx, ['-c', nginxConf, '-e', join(dir, 'nginx-error.log'), '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`]);

  const clients: Client[] = options.clients.map((ip, i) => {
    const name = `c${i + 1}`;
    const namespace = attach(name, 'brc', ip);
    const driver = lab.spawn(namespace, process.execPath, [PEER, 'client', name, BALANCER, '1080', ECHO.host, String(ECHO.port)]);
    return { name, ip, namespace, driver, localPort: 0 };
  });
  const status = (instance: Instance): Status => JSON.parse(lab.exec(instance.namespace, 'curl', ['-sS', '--max-time', '3', 'http://127.0.0.1:9090/api/status'])) as Status;
  return {
    instances,
    clients,
    status,
    associationsOf: (instance, client) => status(instance).sessions.filter((s) => s.command === 'udp' && s.client.startsWith(`${client.ip}:`)),
    async open(client, { reassociate = false, declarePort = true } = {}) {
      let lastError: unknown;
      for (let attempt = 0; attempt < 20; attempt++) {
        if (balancer.exited) throw new Error(`nginx exited: ${balancer.stderr}`);
        try {
          const opened = await client.driver.request({ op: 'open', reassociate, declarePort }, 8000);
          assert.equal(opened.relay, `${BALANCER}:1080`, 'the instance advertises the balancer');
          client.localPort = opened.localPort as number;
          return;
        } catch (error) {
          lastError = error;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      throw lastError;
    },
  };
}


test('nginx stream in front of three instances: UDP ASSOCIATE sticks to the instance of its control connection, and one instance lost ends only its own clients', { timeout: 180_000 }, async (t) => {
  requireNetns();
  requireProgram('nft', 'nftables');
  requireProgram('curl', 'curl');
  const lab = new NetnsLab('lb');
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-lb-'));
  try {
    // The shipped recipe, unchanged.
    const { instances, clients, status, associationsOf, open } = await startTopology(lab, dir, join(deploy, 'socksgate-stream.conf'), { transparent: true, instances: INSTANCES, clients: CLIENTS });

    // Every client associates through the balancer and gets byte-exact echoes.
    for (const client of clients) await open(client);
    for (const client of clients) assert.deepEqual(await echoRound(client), { sent: ROUND_TRIPS, echoed: ROUND_TRIPS }, `${client.name}: byte-exact round trips`);

    // Each client's association and datagrams are on exactly one instance; the others saw nothing of it.
    const placement = new Map<Client, Instance>();
    for (const client of clients) {
      const holders = instances.filter((instance) => associationsOf(instance, client).length > 0);
      assert.equal(holders.length, 1, `${client.name} has one association, on one instance`);
      const [view] = associationsOf(holders[0]!, client);
      // Transparent mode: the instance sees the client's own address and UDP port.
      assert.equal(view!.udpClient, `${client.ip}:${client.localPort}`);
      assert.equal(view!.datagramsUp, ROUND_TRIPS);
      assert.equal(view!.datagramsDown, ROUND_TRIPS);
      placement.set(client, holders[0]!);
    }
    for (const instance of instances) {
      const mine = clients.filter((c) => placement.get(c) === instance).length;
      const totals = status(instance).totals;
      assert.equal(totals.associations, mine, `${instance.name}: associations`);
      assert.equal(totals.clientDatagrams, mine * ROUND_TRIPS, `${instance.name}: datagrams from clients (none of other instances' clients)`);
      assert.equal(totals.deliveredDatagrams, mine * ROUND_TRIPS, `${instance.name}: replies delivered`);
      assert.equal(totals.dropped, 0, `${instance.name}: nothing dropped (no unknown-client, no source mismatch)`);
    }
    t.diagnostic(`placement: ${clients.map((c) => `${c.name}→${placement.get(c)!.name}`).join(' ')}`);
    const used = new Set(placement.values());
    assert.ok(used.size >= 2, `clients spread over ${used.size} instance(s)`);

    // Lose the instance with the most clients; the others keep a flow going meanwhile.
    const victim = [...used].sort((a, b) => clients.filter((c) => placement.get(c) === b).length - clients.filter((c) => placement.get(c) === a).length)[0]!;
    const hit = clients.filter((c) => placement.get(c) === victim);
    const spared = clients.filter((c) => placement.get(c) !== victim);
    t.diagnostic(`killing ${victim.name} (PID ${victim.process.pid}), which holds ${hit.map((c) => c.name).join(' ')}`);
    const sparedPorts = new Map(spared.map((c) => [c, c.localPort]));
    // One of the victim's clients lets the client library set up a new association by itself, from
    // the same UDP socket; the others open a new one from a new socket.
    assert.ok(hit.length >= 2, 'these addresses put at least two clients on the busiest instance');
    const [itself, ...anew] = hit as [Client, ...Client[]];
    await open(itself, { reassociate: true });
    assert.deepEqual(await echoRound(itself), { sent: ROUND_TRIPS, echoed: ROUND_TRIPS });
    for (const client of spared) await client.driver.request({ op: 'flow', intervalMs: 50 });
    await flowsEchoed(spared, 10);
    await lab.kill(victim.process);
    for (const client of anew) {
      await client.driver.waitForLine((l) => l.event === 'closed' && l.localPort === client.localPort, 10_000, `${client.name}: its association to end`);
    }
    // They associate again (through a surviving instance) and get their echoes.
    for (const client of anew) {
      await open(client);
      assert.deepEqual(await echoRound(client), { sent: ROUND_TRIPS, echoed: ROUND_TRIPS }, `${client.name}: round trips after associating again`);
    }
    // The same socket means the same address and port at nginx, whose UDP session still points at
    // the dead instance until that instance's ICMP error reaches it (transparent-routing.sh routes
    // those back): nginx ends that session when a send fails with the error, so a few datagrams (3
    // here) are lost on the way, then the round trips are exact again.
    await itself.driver.waitForLine((l) => l.event === 'disconnected' && l.localPort === itself.localPort, 10_000, `${itself.name}: its control connection to be lost`);
    await itself.driver.waitForLine((l) => l.event === 'reassociated' && l.localPort === itself.localPort, 15_000, `${itself.name}: a new association`);
    let tries = 0;
    while ((await itself.driver.request({ op: 'echo', count: 1, timeoutMs: 1000 })).echoed !== 1) {
      if (++tries < 8) continue;
      const log = readFileSync(join(dir, 'nginx-error.log'), 'utf8').split('\n').filter((line) => line.includes(itself.ip));
      assert.fail(`${itself.name}: no UDP through the balancer after ${tries} tries; nginx says:\n${log.join('\n')}`);
    }
    t.diagnostic(`${itself.name}: ${tries} datagram(s) lost while nginx moved its UDP session`);
    assert.deepEqual(await echoRound(itself), { sent: ROUND_TRIPS, echoed: ROUND_TRIPS }, `${itself.name}: round trips after the library's re-association`);
    assert.ok(!itself.driver.lines.some((l) => l.event === 'closed'), `${itself.name}: its association object lived on`);
    // The flows go on past the re-associations, then stop.
    await flowsEchoed(spared, 10);
    for (const client of spared) {
      const flow = await client.driver.request({ op: 'stop' });
      assert.ok((flow.sent as number) >= 20, `${client.name}: the flow ran before and after`);
      assert.equal(flow.echoed, flow.sent, `${client.name}: no datagram lost while another instance died`);
      assert.ok(!client.driver.lines.some((l) => l.event === 'closed'), `${client.name}: its association never ended`);
      assert.equal(client.localPort, sparedPorts.get(client));
    }

    // Where everyone is now: the spared on their own instance still, the hit on a survivor; no drops.
    const survivors = instances.filter((i) => i !== victim);
    for (const client of clients) {
      const holders = survivors.filter((instance) => associationsOf(instance, client).length > 0);
      assert.equal(holders.length, 1, `${client.name} has one association, on one surviving instance`);
      if (spared.includes(client)) assert.equal(holders[0], placement.get(client), `${client.name} stayed where it was`);
      const [view] = associationsOf(holders[0]!, client);
      assert.equal(view!.udpClient, `${client.ip}:${client.localPort}`);
    }
    for (const instance of survivors) assert.equal(status(instance).totals.dropped, 0, `${instance.name}: nothing dropped`);

    // The deployment guide's first check, from a client: `socksgate check` through the balancer.
    const checked = spawnSync('ip', ['netns', 'exec', clients[0]!.namespace, process.execPath, CLI, 'check', `socks5://${BALANCER}:1080`, '--udp-echo', `${ECHO.host}:${ECHO.port}`, '--json'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(checked.status, 0, checked.stderr);
    const report = JSON.parse(checked.stdout) as { checks: Array<{ id: string; status: string; data?: Record<string, unknown> }> };
    const result = (id: string): { status: string; data?: Record<string, unknown> } => report.checks.find((c) => c.id === id)!;
    assert.deepEqual(result('associate'), { ...result('associate'), status: 'pass', data: { relay: `${BALANCER}:1080` } });
    for (const id of ['udp-round-trip', 'fragments', 'source-port', 'lifetime']) assert.equal(result(id).status, 'pass', id);
    // The largest UDP payload over IPv4 behind a 10-byte SOCKS header: nothing on the way (nginx's
    // buffer, IP fragments of replies through the balancer) makes it smaller.
    assert.equal(result('max-datagram').data?.bytes, 65507 - 10);
  } finally {
    await lab.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('plain nginx stream (no transparent mode): the instance sees every client as the balancer, so declared ports never match and undeclared ones are ambiguous', { timeout: 120_000 }, async () => {
  requireNetns();
  requireProgram('curl', 'curl');
  const lab = new NetnsLab('sn');
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-lb-'));
  try {
    // The recipe without its proxy_bind lines (and with one instance): nginx connects from its own address.
    const recipe = readFileSync(join(deploy, 'socksgate-stream.conf'), 'utf8').split('\n');
    const plain = recipe.filter((line) => !/^\s*(proxy_bind |server 10\.0\.0\.1[23]:)/.test(line));
    assert.equal(recipe.length - plain.length, 4);
    writeFileSync(join(dir, 'plain.conf'), plain.join('\n'));
    const topology = await startTopology(lab, dir, join(dir, 'plain.conf'), { transparent: false, instances: ['10.0.0.11'], clients: ['10.0.1.11', '10.0.1.12'] });
    const { status, open } = topology;
    const instance = topology.instances[0]!;
    const [c1, c2] = topology.clients as [Client, Client];
    const udpSessions = (): AssociationView[] => status(instance).sessions.filter((s) => s.command === 'udp');

    // A client that declares its UDP port (socksgate's client and PySocks do): nginx sends its
    // datagrams from a port of its own, so none matches the association.
    await open(c1);
    const [view] = udpSessions();
    assert.match(view!.client, /^10\.0\.0\.1:\d+$/, 'the control connection comes from the balancer');
    assert.equal(view!.udpClient, `10.0.0.1:${c1.localPort}`, 'the declared port, on the balancer\'s address');
    assert.deepEqual(await echoRound(c1, 3, 500), { sent: 3, echoed: 0 });
    assert.equal(status(instance).drops['unknown-client'], 3);

    // Two clients that declare nothing, waiting at once: from the instance they look the same, and
    // it drops rather than guesses.
    await open(c1, { declarePort: false });
    await open(c2, { declarePort: false });
    assert.deepEqual(await echoRound(c1, 3, 500), { sent: 3, echoed: 0 });
    assert.equal(status(instance).drops.ambiguous, 3);

    // Alone, a client that declares nothing gets through: its association takes nginx's port, and
    // all that source validation can still tell is that datagrams come from the balancer.
    await c2.driver.request({ op: 'close' });
    await waitFor(() => udpSessions().length === 1, 5000, 'c2\'s association to end');
    assert.deepEqual(await echoRound(c1, 3), { sent: 3, echoed: 3 });
    assert.match(udpSessions()[0]!.udpClient, /^10\.0\.0\.1:\d+$/);
  } finally {
    await lab.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function echoRound(client: Client, count = ROUND_TRIPS, timeoutMs = 2000): Promise<{ sent: number; echoed: number }> {
  const { sent, echoed } = await client.driver.request({ op: 'echo', count, timeoutMs }, count * timeoutMs + 10_000);
  return { sent: sent as number, echoed: echoed as number };
}

/** Waits (at most 10 s) until every flow has had `more` echoes beyond where it is now. */
async function flowsEchoed(clients: Client[], more: number): Promise<void> {
  const start = new Map<Client, number>();
  for (const client of clients) start.set(client, (await client.driver.request({ op: 'progress' })).echoed as number);
  const deadline = Date.now() + 10_000;
  for (const client of clients) {
    for (;;) {
      const { echoed } = await client.driver.request({ op: 'progress' });
      if ((echoed as number) >= start.get(client)! + more) break;
      if (Date.now() > deadline) throw new Error(`${client.name}: its flow stalled at ${echoed} echoes`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
