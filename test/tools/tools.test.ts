import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { DnsStub } from '../../src/tools/dns-stub.js';
import { UdpForwarder } from '../../src/tools/udp-forward.js';
import { listenPorts, startCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { UdpPeer, dnsAnswers, dnsQuery, startUdpEcho } from '../helpers/udp.js';

const many = Array.from({ length: 40 }, (_, i) => `127.0.1.${i + 1}`);

describe('udp-forward', () => {
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let echo: Awaited<ReturnType<typeof startUdpEcho>>;
  before(async () => {
    socks = await startSocks();
    echo = await startUdpEcho();
  });
  after(async () => {
    echo.close();
    await socks.close();
  });

  test('each local peer gets its own association, and its own replies', async () => {
    const forwarder = new UdpForwarder({ proxy: `socks5://127.0.0.1:${socks.port}`, listen: { host: '127.0.0.1', port: 0 }, to: { host: '127.0.0.1', port: echo.port }, idleTimeoutMs: 1500 });
    const { port } = await forwarder.listen();
    const a = await UdpPeer.bind('127.0.0.1');
    const b = await UdpPeer.bind('127.0.0.1');
    try {
      // A burst before the association is up is queued, not lost.
      for (let i = 0; i < 5; i++) await a.send(Buffer.from(`a${i}`), port, '127.0.0.1');
      await b.send(Buffer.from('b0'), port, '127.0.0.1');
      const fromA = new Set<string>();
      for (let i = 0; i < 5; i++) fromA.add((await a.receive(10_000)).data.toString());
      assert.deepEqual([...fromA].sort(), ['a0', 'a1', 'a2', 'a3', 'a4']);
      const fromB = await b.receive(10_000);
      assert.equal(fromB.data.toString(), 'b0');
      assert.equal(fromB.from.port, port, 'replies come from the forwarder port');
      assert.equal(forwarder.peerCount, 2);
      assert.equal(socks.server.udpStats.activeAssociations, 2);
      // Idle peers lose their associations.
      await waitFor(() => forwarder.peerCount === 0 && socks.server.udpStats.activeAssociations === 0, 15_000, 'idle associations to close');
    } finally {
      a.close();
      b.close();
      await forwarder.close();
    }
  });

  test('socksgate udp-forward on the command line', async () => {
    const cli = startCli(['udp-forward', '--proxy', `socks5://127.0.0.1:${socks.port}`, '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${echo.port}`, '--log-format', 'json']);
    const peer = await UdpPeer.bind('127.0.0.1');
    try {
      const port = listenPorts(await cli.waitForLine((l) => String(l.msg).includes('udp-forward listening'))).get('127.0.0.1')!;
      await peer.send(Buffer.from('from the command line'), port, '127.0.0.1');
      assert.equal((await peer.receive()).data.toString(), 'from the command line');
    } finally {
      peer.close();
      assert.equal(await cli.stop(), 0, cli.output());
    }
    const bad = startCli(['udp-forward', '--proxy', 'http://x', '--listen', '127.0.0.1:0', '--to', 'a:1']);
    assert.notEqual(await bad.exited(), 0);
    assert.match(bad.stderr, /scheme "http" is not socks5/);
  });
});

describe('dns stub', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    dns = await startDnsmasq({ 'small.test': ['127.0.0.5'], 'big.test': many });
    socks = await startSocks();
  });
  after(async () => {
    await Promise.all([socks.close(), dns.close()]);
  });

  test('answers over SOCKS5 UDP; a truncated answer is asked again over TCP', async () => {
    const stub = new DnsStub({ proxy: `socks5://127.0.0.1:${socks.port}`, listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: dns.port } });
    const { port } = await stub.listen();
    const client = await UdpPeer.bind('127.0.0.1');
    try {
      await client.send(dnsQuery('small.test', 0xabcd), port, '127.0.0.1');
      assert.deepEqual(dnsAnswers((await client.receive(3000)).data), { id: 0xabcd, rcode: 0, addresses: ['127.0.0.5'] });
      await client.send(dnsQuery('big.test', 0x0101), port, '127.0.0.1');
      const big = dnsAnswers((await client.receive(5000)).data);
      assert.equal(big.id, 0x0101);
      assert.deepEqual(big.addresses.sort(), [...many].sort());
      assert.deepEqual(stub.stats, { queries: 2, udpAnswers: 1, tcpAfterTruncation: 1, tcpAfterTimeout: 0, failures: 0 });
    } finally {
      client.close();
      await stub.close();
    }
  });

  test('clients using the same query ID get their own answers', async () => {
    const stub = new DnsStub({ proxy: `socks5://127.0.0.1:${socks.port}`, listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: dns.port } });
    const { port } = await stub.listen();
    const clients = await Promise.all([UdpPeer.bind('127.0.0.1'), UdpPeer.bind('127.0.0.1')]);
    try {
      await clients[0]!.send(dnsQuery('small.test', 7), port, '127.0.0.1');
      await clients[1]!.send(dnsQuery('small.test', 7), port, '127.0.0.1');
      for (const c of clients) assert.deepEqual(dnsAnswers((await c.receive(3000)).data), { id: 7, rcode: 0, addresses: ['127.0.0.5'] });
    } finally {
      for (const c of clients) c.close();
      await stub.close();
    }
  });

  test('an upstream that only answers over TCP: UDP times out and TCP answers', async () => {
    // A DNS-over-TCP server that relays to dnsmasq's TCP side: no UDP socket on its port.
    const sockets = new Set<Socket>();
    const tcpOnly = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      const upstream = (async () => {
        const { connect } = await import('node:net');
        return connect({ host: '127.0.0.1', port: dns.port });
      })();
      upstream.then((u) => {
        socket.pipe(u).pipe(socket);
        u.on('error', () => socket.destroy());
        socket.on('close', () => u.destroy());
      });
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((resolve) => tcpOnly.listen(0, '127.0.0.1', resolve));
    const tcpPort = (tcpOnly.address() as { port: number }).port;
    const stub = new DnsStub({ proxy: `socks5://127.0.0.1:${socks.port}`, listen: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: tcpPort }, timeoutMs: 300 });
    const { port } = await stub.listen();
    const client = await UdpPeer.bind('127.0.0.1');
    try {
      await client.send(dnsQuery('small.test', 9), port, '127.0.0.1');
      assert.deepEqual(dnsAnswers((await client.receive(5000)).data), { id: 9, rcode: 0, addresses: ['127.0.0.5'] });
      assert.equal(stub.stats.tcpAfterTimeout, 1);
    } finally {
      client.close();
      await stub.close();
      for (const s of sockets) s.destroy();
      tcpOnly.close();
    }
  });

  test('socksgate dns on the command line', async () => {
    const cli = startCli(['dns', '--proxy', `socks5://127.0.0.1:${socks.port}`, '--listen', '127.0.0.1:0', '--upstream', `127.0.0.1:${dns.port}`, '--log-format', 'json']);
    const client = await UdpPeer.bind('127.0.0.1');
    try {
      const port = listenPorts(await cli.waitForLine((l) => String(l.msg).includes('dns listening'))).get('127.0.0.1')!;
      await client.send(dnsQuery('small.test', 3), port, '127.0.0.1');
      assert.deepEqual(dnsAnswers((await client.receive(3000)).data).addresses, ['127.0.0.5']);
    } finally {
      client.close();
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });
});
