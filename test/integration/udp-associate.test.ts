import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { DropReason } from '../../src/udp/stats.js';
import { waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { Peer } from '../helpers/peer.js';
import { UdpPeer, openAssociation, startUdpEcho, unwrap, wrap } from '../helpers/udp.js';

type Socks = Awaited<ReturnType<typeof startSocks>>;

/** Drop counters before/after, to assert exact deltas. */
function dropsOf(socks: Socks): Record<DropReason, number> {
  return { ...socks.server.udpStats.drops };
}
function delta(socks: Socks, before: Record<DropReason, number>): Partial<Record<DropReason, number>> {
  const out: Partial<Record<DropReason, number>> = {};
  for (const [reason, count] of Object.entries(socks.server.udpStats.drops) as Array<[DropReason, number]>) {
    if (count !== before[reason]) out[reason] = count - before[reason];
  }
  return out;
}

describe('UDP ASSOCIATE (RFC 1928 §7)', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let socks: Socks;
  let socks6: Socks;
  let echo4: Awaited<ReturnType<typeof startUdpEcho>>;
  let echo6: Awaited<ReturnType<typeof startUdpEcho>>;
  before(async () => {
    dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'], 'echo6.test': ['::1'] });
    const udp = { fragmentTimeoutMs: 300 };
    socks = await startSocks({ dnsServers: [dns.server], udp });
    socks6 = await startSocks({ dnsServers: [dns.server], udp }, '::1');
    echo4 = await startUdpEcho('127.0.0.1');
    echo6 = await startUdpEcho('::1');
  });
  after(async () => {
    echo4.close();
    echo6.close();
    await Promise.all([socks.close(), socks6.close(), dns.close()]);
  });

  test('IPv4: BND.ADDR is the address the client reached; replies carry the real source, byte-exact', async () => {
    const a = await openAssociation(socks.port);
    try {
      assert.equal(a.reply.code, 0);
      assert.equal(a.reply.host, '127.0.0.1', 'never 0.0.0.0');
      assert.notEqual(a.reply.port, socks.port);
      const data = randomBytes(777);
      await a.sendTo('127.0.0.1', echo4.port, data);
      const back = await a.udp.receive();
      assert.equal(back.from.port, a.reply.port, 'replies come from the relay endpoint');
      const reply = unwrap(back.data);
      assert.deepEqual({ frag: reply.frag, atyp: reply.atyp, host: reply.host, port: reply.port }, { frag: 0, atyp: 1, host: '127.0.0.1', port: echo4.port });
      assert.ok(reply.data.equals(data));
    } finally {
      a.close();
    }
  });

  test('IPv6 client and destination; and each family reaching the other through the dual-stack relay', async () => {
    const six = await openAssociation(socks6.port, { proxyHost: '::1' });
    const four = await openAssociation(socks.port);
    try {
      assert.equal(six.reply.atyp, 4);
      assert.equal(six.reply.host, '::1');
      for (const [a, host, port, atyp] of [
        [six, '::1', echo6.port, 4],
        [six, '127.0.0.1', echo4.port, 1],
        [four, '::1', echo6.port, 4],
      ] as const) {
        const data = Buffer.from(`to ${host}`);
        await a.sendTo(host, port, data);
        const reply = unwrap((await a.udp.receive()).data);
        assert.deepEqual({ atyp: reply.atyp, host: reply.host, port: reply.port, data: reply.data.toString() }, { atyp, host, port, data: `to ${host}` });
      }
    } finally {
      six.close();
      four.close();
    }
  });

  test('domain destinations are resolved by the proxy through its DNS server; unknown names are dropped and counted', async () => {
    const a = await openAssociation(socks.port);
    try {
      for (const [name, host, port] of [['echo.test', '127.0.0.1', echo4.port], ['echo6.test', '::1', echo6.port]] as const) {
        await a.sendTo(name, port, Buffer.from(name));
        const reply = unwrap((await a.udp.receive()).data);
        assert.equal(reply.host, host, 'the real source, not the name');
        assert.equal(reply.data.toString(), name);
      }
      const before = dropsOf(socks);
      await a.sendTo('missing.test', echo4.port, Buffer.from('lost'));
      await waitFor(() => socks.server.udpStats.drops.dns === before.dns + 1, 3000, 'the dns drop');
      assert.deepEqual(delta(socks, before), { dns: 1 });
    } finally {
      a.close();
    }
  });

  test('a declared port: datagrams from any other port or socket of the client are dropped', async () => {
    const a = await openAssociation(socks.port, { declare: 'port' });
    const stray = await UdpPeer.bind('127.0.0.1');
    try {
      const before = dropsOf(socks);
      await stray.send(wrap('127.0.0.1', echo4.port, Buffer.from('not mine')), a.reply.port, a.reply.host);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('mine'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'mine');
      await stray.nothingFor(100);
      assert.deepEqual(delta(socks, before), { source: 1 });
    } finally {
      a.close();
      stray.close();
    }
  });

  test('no declared port: the first datagram from the client IP fixes it', async () => {
    const a = await openAssociation(socks.port, { declare: 'zero' });
    const later = await UdpPeer.bind('127.0.0.1');
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('first'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'first');
      const before = dropsOf(socks);
      await later.send(wrap('127.0.0.1', echo4.port, Buffer.from('second socket')), a.reply.port, a.reply.host);
      await waitFor(() => socks.server.udpStats.drops.source === before.source + 1, 2000, 'the source drop');
      await later.nothingFor(50);
    } finally {
      a.close();
      later.close();
    }
  });

  test('address-and-port filtering: only endpoints the client sent to may reach it', async () => {
    const a = await openAssociation(socks.port);
    const stranger = await UdpPeer.bind('127.0.0.1');
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('hi'));
      await a.udp.receive();
      const before = dropsOf(socks);
      await stranger.send(Buffer.from('unsolicited'), a.reply.port, a.reply.host);
      await waitFor(() => socks.server.udpStats.drops.source + socks.server.udpStats.drops.filtered > before.source + before.filtered, 2000, 'the drop');
      await a.udp.nothingFor(50);
      // Once the client has sent to it, the same endpoint gets through.
      await a.sendTo('127.0.0.1', stranger.port, Buffer.from('hello stranger'));
      const got = await stranger.receive();
      assert.equal(got.data.toString(), 'hello stranger');
      await stranger.send(Buffer.from('now solicited'), got.from.port, got.from.address);
      const reply = unwrap((await a.udp.receive()).data);
      assert.deepEqual([reply.host, reply.port, reply.data.toString()], ['127.0.0.1', stranger.port, 'now solicited']);
    } finally {
      a.close();
      stranger.close();
    }
  });

  test('endpoint-independent filtering lets anyone reach the client (full cone)', async () => {
    const cone = await startSocks({ udp: { filtering: 'endpoint-independent' } });
    const a = await openAssociation(cone.port);
    const stranger = await UdpPeer.bind('127.0.0.1');
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('open the mapping'));
      await a.udp.receive();
      await stranger.send(Buffer.from('from anyone'), a.reply.port, a.reply.host);
      const reply = unwrap((await a.udp.receive()).data);
      assert.deepEqual([reply.host, reply.port, reply.data.toString()], ['127.0.0.1', stranger.port, 'from anyone']);
    } finally {
      a.close();
      stranger.close();
      await cone.close();
    }
  });

  test('fragments: in-order sequences are reassembled; lower FRAG restarts; gaps and timeouts abandon', async () => {
    const a = await openAssociation(socks.port);
    const stats = socks.server.udpStats;
    try {
      const parts = [randomBytes(500), randomBytes(600), randomBytes(700)];
      const beforeCount = echo4.received();
      const before = dropsOf(socks);
      const reassembledBefore = stats.reassembled;
      await a.sendTo('127.0.0.1', echo4.port, parts[0]!, 1);
      await a.sendTo('127.0.0.1', echo4.port, parts[1]!, 2);
      await a.sendTo('127.0.0.1', echo4.port, parts[2]!, 0x83);
      const whole = unwrap((await a.udp.receive()).data);
      assert.ok(whole.data.equals(Buffer.concat(parts)));
      assert.equal(echo4.received(), beforeCount + 1);
      assert.equal(stats.reassembled, reassembledBefore + 1);

      // 1, 2, then 1 again: the first sequence is abandoned (2 fragments) and a new one starts.
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('old-1'), 1);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('old-2'), 2);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('new-1'), 1);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('new-2'), 0x82);
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'new-1new-2');

      // Out of order (2 before 1, then 3 after 1): nothing is delivered.
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('b'), 2);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('a'), 1);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('c'), 0x83);
      // A lone first fragment waits for the 300 ms reassembly timer.
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('lonely'), 1);
      await waitFor(() => stats.drops['fragment-timeout'] === before['fragment-timeout'] + 1, 3000, 'the reassembly timer');
      await a.udp.nothingFor(50);
      assert.deepEqual(delta(socks, before), { 'fragment-abandoned': 2 + 1 + 2, 'fragment-timeout': 1 });
      assert.equal(echo4.received(), beforeCount + 2);
    } finally {
      a.close();
    }
  });

  test('udp.fragments drop: FRAG ≠ 0 is dropped and counted', async () => {
    const strict = await startSocks({ udp: { fragments: 'drop' } });
    const a = await openAssociation(strict.port);
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('frag'), 1);
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('whole'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'whole');
      assert.equal(strict.server.udpStats.drops['fragment-disabled'], 1);
      assert.equal(strict.server.udpStats.fragments, 1);
    } finally {
      a.close();
      await strict.close();
    }
  });

  test('malformed datagrams are dropped and counted by reason, and the association keeps working', async () => {
    const a = await openAssociation(socks.port);
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('warm-up'));
      await a.udp.receive();
      const before = dropsOf(socks);
      const bad = [
        Buffer.from([0, 0, 0]), // shorter than any header
        Buffer.from([0, 1, 0, 1, 127, 0, 0, 1, 0, 7, 0x41]), // RSV ≠ 0
        Buffer.from([0, 0, 0, 9, 127, 0, 0, 1, 0, 7, 0x41]), // unknown ATYP
        Buffer.from([0, 0, 0, 3, 0, 0, 7, 0x41]), // domain of length 0
        Buffer.from([0, 0, 0, 3, 40, 0x61, 0x62]), // domain longer than the datagram
        Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]), // IPv6 address cut short
        Buffer.from([0, 0, 0, 1, 127, 0, 0, 1, 0, 0, 0x41]), // destination port 0
      ];
      for (const datagram of bad) await a.udp.send(datagram, a.reply.port, a.reply.host);
      // A "name" that Node would take for an IPv6 address with a zone: no host name has a '%'.
      const zoned = Buffer.from('::1%a.b', 'latin1');
      const port = Buffer.from([echo6.port >> 8, echo6.port & 0xff]);
      await a.udp.send(Buffer.concat([Buffer.from([0, 0, 0, 3, zoned.length]), zoned, port, Buffer.from('zone')]), a.reply.port, a.reply.host);
      await waitFor(() => socks.server.udpStats.drops.malformed === before.malformed + bad.length + 1, 2000, 'the zoned address to be refused');
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('still fine'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'still fine');
      assert.deepEqual(delta(socks, before), { malformed: bad.length + 1 });
    } finally {
      a.close();
    }
  });

  test('largest payloads relay intact; larger ones and oversize replies are dropped and counted', async () => {
    const a = await openAssociation(socks.port);
    try {
      const biggest = randomBytes(65507 - 10);
      await a.sendTo('127.0.0.1', echo4.port, biggest);
      const back = unwrap((await a.udp.receive()).data);
      assert.equal(back.data.length, biggest.length);
      assert.ok(back.data.equals(biggest));
      // Reassembled to the UDP maximum: it reaches the destination, but its reply cannot be wrapped.
      const before = dropsOf(socks);
      const half = randomBytes(32760);
      const other = randomBytes(65507 - 32760);
      const echoed = echo4.sizes.length;
      await a.sendTo('127.0.0.1', echo4.port, half, 1);
      await a.sendTo('127.0.0.1', echo4.port, other, 0x82);
      await waitFor(() => socks.server.udpStats.drops['too-large'] === before['too-large'] + 1, 2000, 'the oversize reply drop');
      assert.equal(echo4.sizes[echoed], 65507);
    } finally {
      a.close();
    }
    const small = await startSocks({ udp: { maxPayload: 1000 } });
    const b = await openAssociation(small.port);
    try {
      await b.sendTo('127.0.0.1', echo4.port, Buffer.alloc(1001));
      await b.sendTo('127.0.0.1', echo4.port, Buffer.alloc(1000, 7));
      assert.equal(unwrap((await b.udp.receive()).data).data.length, 1000);
      assert.equal(small.server.udpStats.drops['too-large'], 1);
    } finally {
      b.close();
      await small.close();
    }
  });

  test('3000 datagrams of mixed sizes come back byte-exact', async () => {
    const a = await openAssociation(socks.port);
    try {
      const sent = new Map<number, Buffer>();
      let received = 0;
      const window = 16;
      let next = 0;
      const total = 3000;
      const sendOne = async (): Promise<void> => {
        const id = next++;
        const body = Buffer.concat([Buffer.from([id >> 8, id & 0xff]), randomBytes((id * 7919) % 1400)]);
        sent.set(id, body);
        await a.sendTo('127.0.0.1', echo4.port, body);
      };
      for (let i = 0; i < window; i++) await sendOne();
      while (received < total) {
        const reply = unwrap((await a.udp.receive(3000)).data);
        const id = reply.data.readUInt16BE(0);
        assert.ok(reply.data.equals(sent.get(id)!), `datagram ${id}`);
        sent.delete(id);
        received++;
        if (next < total) await sendOne();
      }
      assert.equal(sent.size, 0);
    } finally {
      a.close();
    }
  });

  test('a destination port with nobody listening does not hurt the association', async () => {
    const closed = await UdpPeer.bind('127.0.0.1');
    const deadPort = closed.port;
    closed.close();
    const a = await openAssociation(socks.port);
    try {
      for (let i = 0; i < 5; i++) await a.sendTo('127.0.0.1', deadPort, Buffer.from('anyone?'));
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('alive'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'alive');
    } finally {
      a.close();
    }
  });

  test('closing the control connection ends the association at once', async () => {
    const opened = socks.server.udpStats.associationsClosed;
    const a = await openAssociation(socks.port);
    await a.sendTo('127.0.0.1', echo4.port, Buffer.from('x'));
    await a.udp.receive();
    a.control.destroy();
    await waitFor(() => socks.server.udpStats.associationsClosed === opened + 1, 2000, 'the association to close');
    // The relay port is gone: binding it ourselves works (once the close has reached the kernel).
    let reuse: UdpPeer | null = null;
    const deadline = Date.now() + 2000;
    while (!reuse && Date.now() < deadline) {
      reuse = await UdpPeer.bind('0.0.0.0', a.reply.port).catch(() => null);
      if (!reuse) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(reuse, `relay port ${a.reply.port} was released`);
    reuse.close();
    a.udp.close();
  });

  test('udp.idleTimeout ends a quiet association and its session', async () => {
    const idle = await startSocks({ udp: { idleTimeoutMs: 300 } });
    const a = await openAssociation(idle.port);
    try {
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('x'));
      await a.udp.receive();
      await a.control.closed(3000);
      assert.equal(idle.server.udpStats.activeAssociations, 0);
    } finally {
      a.close();
      await idle.close();
    }
  });

  test('udp.advertise replaces BND.ADDR', async () => {
    const advertised = await startSocks({ udp: { advertise: '127.0.0.9' } });
    const a = await openAssociation(advertised.port);
    try {
      assert.equal(a.reply.host, '127.0.0.9');
      // The relay listens on all addresses, so the advertised loopback address reaches it.
      await a.sendTo('127.0.0.1', echo4.port, Buffer.from('via advertised'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'via advertised');
    } finally {
      a.close();
      await advertised.close();
    }
  });

  test('no association, socket or timer is left behind', async () => {
    await waitFor(() => socks.server.sessionCount === 0 && socks.server.udpStats.activeAssociations === 0, 3000, 'all associations to close');
  });
});

describe('fixed-port mode (udp.port)', () => {
  let socks: Socks;
  let echo: Awaited<ReturnType<typeof startUdpEcho>>;
  before(async () => {
    socks = await startSocks({ udp: { port: 0 } });
    echo = await startUdpEcho();
  });
  after(async () => {
    echo.close();
    await socks.close();
  });

  test('every association gets the same relay endpoint, and many clients at once get their own replies', async () => {
    const clients = await Promise.all(Array.from({ length: 12 }, () => openAssociation(socks.port, { declare: 'port' })));
    try {
      const port = clients[0]!.reply.port;
      for (const c of clients) assert.deepEqual([c.reply.host, c.reply.port], ['127.0.0.1', port]);
      await Promise.all(clients.map((c, i) => c.sendTo('127.0.0.1', echo.port, Buffer.from(`client ${i}`))));
      for (const [i, c] of clients.entries()) {
        const reply = unwrap((await c.udp.receive()).data);
        assert.equal(reply.data.toString(), `client ${i}`);
        assert.equal(c.udp.pending, 0);
      }
    } finally {
      for (const c of clients) c.close();
    }
  });

  test('undeclared ports: one waiting association learns its port; two waiting from one IP is ambiguous and dropped', async () => {
    const first = await openAssociation(socks.port, { declare: 'zero' });
    const second = await openAssociation(socks.port, { declare: 'zero' });
    try {
      const before = socks.server.udpStats.drops.ambiguous;
      await first.sendTo('127.0.0.1', echo.port, Buffer.from('which one?'));
      await waitFor(() => socks.server.udpStats.drops.ambiguous === before + 1, 2000, 'the ambiguous drop');
      await first.udp.nothingFor(50);
      // A client from another address is not ambiguous with them.
      const other = await openAssociation(socks.port, { declare: 'zero', clientHost: '127.0.0.1', proxyHost: '127.0.0.1' });
      other.close();
      second.close();
      await waitFor(() => socks.server.demuxSize === 1, 2000, 'the others to leave');
      await first.sendTo('127.0.0.1', echo.port, Buffer.from('now it is clear'));
      assert.equal(unwrap((await first.udp.receive()).data).data.toString(), 'now it is clear');
    } finally {
      first.close();
      second.close();
    }
  });

  test('a datagram from an address with no association is dropped and counted', async () => {
    const a = await openAssociation(socks.port, { declare: 'port' });
    const stranger = await UdpPeer.bind('127.0.0.2');
    try {
      const before = socks.server.udpStats.drops['unknown-client'];
      await stranger.send(wrap('127.0.0.1', echo.port, Buffer.from('let me in')), a.reply.port, a.reply.host);
      await waitFor(() => socks.server.udpStats.drops['unknown-client'] === before + 1, 2000, 'the drop');
    } finally {
      a.close();
      stranger.close();
    }
  });

  test('listening on "localhost": the shared UDP socket sits where the TCP listener really is', async () => {
    const local = await startSocks({ udp: { port: 0 } }, 'localhost');
    const where = local.server.addresses()[0]!.host;
    const a = await openAssociation(local.port, { proxyHost: where });
    try {
      assert.equal(a.reply.code, 0);
      await a.sendTo('127.0.0.1', echo.port, Buffer.from('via localhost'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'via localhost');
    } finally {
      a.close();
      await local.close();
    }
  });

  test('a second association declaring the same endpoint is refused', async () => {
    const a = await openAssociation(socks.port, { declare: 'port' });
    const control = await Peer.connect(socks.port);
    try {
      await handshake(control);
      control.write(request(3, '127.0.0.1', a.udp.port));
      assert.equal((await readReply(control)).code, 0x01);
    } finally {
      a.close();
      control.destroy();
    }
    await waitFor(() => socks.server.demuxSize === 0 && socks.server.sessionCount === 0, 3000, 'everything to be released');
  });
});
