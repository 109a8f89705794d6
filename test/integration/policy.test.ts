import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startDnsmasq, startEcho, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

/** A logger whose JSON lines the test can read. */
function memoryLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

async function connectReply(port: number, host: string, targetPort: number, options: { from?: string; proxyHost?: string; credentials?: { user: string; pass: string } } = {}): Promise<number> {
  const peer = await Peer.connect(port, options.proxyHost ?? '127.0.0.1', options.from);
  await handshake(peer, options.credentials);
  peer.write(request(1, host, targetPort));
  const { code } = await readReply(peer);
  peer.destroy();
  return code;
}

describe('rules over real sockets', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let socks6: Awaited<ReturnType<typeof startSocks>>;
  let log: ReturnType<typeof memoryLogger>;
  before(async () => {
    dns = await startDnsmasq({ 'blocked.ads.test': ['127.0.0.1'], 'smuggle.test': ['127.0.0.66'], 'fine.test': ['127.0.0.1'] });
    echo = await startEcho();
    udpEcho = await startUdpEcho();
    log = memoryLogger();
    const rules = [
      { action: 'deny' as const, name: 'no-ads', destinations: ['.ads.test'] },
      { action: 'deny' as const, name: 'no-66', destinations: ['127.0.0.66/32'] },
      { action: 'deny' as const, name: 'banned-client', clients: ['127.0.0.2', '::1'], commands: ['connect' as const] },
      { action: 'deny' as const, name: 'no-udp-for-3', clients: ['127.0.0.3'], commands: ['udp' as const] },
      { action: 'deny' as const, name: 'low-ports', ports: ['1-1023'] },
    ];
    socks = await startSocks({ dnsServers: [dns.server], rules, logger: log.logger });
    socks6 = await startSocks({ dnsServers: [dns.server], rules }, '::1');
  });
  after(async () => {
    udpEcho.close();
    await Promise.all([socks.close(), socks6.close(), echo.close(), dns.close()]);
  });

  test('client address rules, IPv4 and IPv6 clients: 0x02 for the banned, 0x00 for others', async () => {
    assert.equal(await connectReply(socks.port, '127.0.0.1', echo.port, { from: '127.0.0.2' }), 0x02);
    assert.equal(await connectReply(socks.port, '127.0.0.1', echo.port, { from: '127.0.0.4' }), 0x00);
    assert.equal(await connectReply(socks6.port, '127.0.0.1', echo.port, { proxyHost: '::1' }), 0x02);
    const denial = log.lines.find((l) => l.msg === 'denied by policy' && String(l.client).startsWith('127.0.0.2:'));
    assert.ok(denial, JSON.stringify(log.lines.slice(-3)));
    assert.equal(denial.rule, 'rule 3 "banned-client": deny from 127.0.0.2, ::1, command connect');
  });

  test('domain suffix, and a name that resolves to a denied address', async () => {
    assert.equal(await connectReply(socks.port, 'blocked.ads.test', echo.port), 0x02);
    assert.equal(await connectReply(socks.port, 'smuggle.test', echo.port), 0x02);
    assert.equal(await connectReply(socks.port, 'fine.test', echo.port), 0x00);
    assert.ok(log.lines.some((l) => l.rule === 'rule 2 "no-66": deny to 127.0.0.66/32' && l.address === '127.0.0.66'));
  });

  test('port ranges', async () => {
    assert.equal(await connectReply(socks.port, '127.0.0.1', 80), 0x02);
  });

  test('UDP: a denied ASSOCIATE gets 0x02; denied datagrams are dropped, counted and logged once', async () => {
    const control = await Peer.connect(socks.port, '127.0.0.1', '127.0.0.3');
    await handshake(control);
    control.write(request(3, '0.0.0.0', 0));
    assert.equal((await readReply(control)).code, 0x02);
    control.destroy();

    const a = await openAssociation(socks.port);
    try {
      const before = socks.server.udpStats.drops.denied;
      for (let i = 0; i < 3; i++) await a.sendTo('127.0.0.66', udpEcho.port, Buffer.from('no'));
      await a.sendTo('blocked.ads.test', udpEcho.port, Buffer.from('no'));
      await a.sendTo('127.0.0.1', udpEcho.port, Buffer.from('yes'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'yes');
      await waitFor(() => socks.server.udpStats.drops.denied === before + 4, 2000, 'four denied datagrams');
      assert.equal(log.lines.filter((l) => l.msg === 'denied by policy' && l.target === `127.0.0.66:${udpEcho.port}`).length, 1, 'logged once per destination');
    } finally {
      a.close();
    }
  });
});

describe('users and groups in rules', () => {
  test('a group may CONNECT, others may not; UDP per user', async () => {
    const echo = await startEcho();
    const udpEcho = await startUdpEcho();
    const users = UserStore.fromEntries([
      ['alice', await hashPassword(Buffer.from('a'), 10)],
      ['bob', await hashPassword(Buffer.from('b'), 10)],
    ]);
    const socks = await startSocks({
      users,
      groups: { staff: ['alice'] },
      defaultAction: 'deny',
      rules: [
        { action: 'allow', groups: ['staff'] },
        { action: 'allow', users: ['bob'], commands: ['udp'], destinations: ['127.0.0.1'] },
      ],
    });
    try {
      assert.equal(await connectReply(socks.port, '127.0.0.1', echo.port, { credentials: { user: 'alice', pass: 'a' } }), 0x00);
      assert.equal(await connectReply(socks.port, '127.0.0.1', echo.port, { credentials: { user: 'bob', pass: 'b' } }), 0x02);
      const bob = await openAssociation(socks.port, { credentials: { user: 'bob', pass: 'b' } });
      try {
        await bob.sendTo('::1', udpEcho.port, Buffer.from('not here'));
        await bob.sendTo('127.0.0.1', udpEcho.port, Buffer.from('bob udp'));
        assert.equal(unwrap((await bob.udp.receive()).data).data.toString(), 'bob udp');
        assert.equal(socks.server.udpStats.drops.denied, 1);
      } finally {
        bob.close();
      }
    } finally {
      udpEcho.close();
      await Promise.all([socks.close(), echo.close()]);
    }
  });
});

describe('safe defaults on a live server', () => {
  test('loopback targets are denied by default, allowed by a rule naming them or by allowLoopbackTargets', async () => {
    const echo = await startEcho();
    const udpEcho = await startUdpEcho();
    const strict = await startSocks({ allowLoopbackTargets: false });
    const named = await startSocks({ allowLoopbackTargets: false, rules: [{ action: 'allow', destinations: ['127.0.0.1/32'], ports: [echo.port] }] });
    try {
      assert.equal(await connectReply(strict.port, '127.0.0.1', echo.port), 0x02);
      assert.equal(await connectReply(strict.port, 'localhost', echo.port), 0x02);
      assert.equal(await connectReply(named.port, '127.0.0.1', echo.port), 0x00);
      const a = await openAssociation(strict.port);
      try {
        await a.sendTo('127.0.0.1', udpEcho.port, Buffer.from('x'));
        await waitFor(() => strict.server.udpStats.drops.denied === 1, 2000, 'the loopback datagram to be denied');
        assert.equal(udpEcho.received(), 0);
      } finally {
        a.close();
      }
    } finally {
      udpEcho.close();
      await Promise.all([strict.close(), named.close(), echo.close()]);
    }
  });
});
