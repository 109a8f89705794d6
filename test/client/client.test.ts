import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { associate, bind, connect, maxDatagramSize, parseProxy, type UdpMessage } from 'socksgate-client';
import { SocksError } from 'socksgate-client/protocol';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startDante, startDnsmasq, startEcho, startSocks } from '../helpers/servers.js';
import { startUdpEcho } from '../helpers/udp.js';

function nextMessage(association: { once(event: 'message', fn: (m: UdpMessage) => void): unknown }, timeoutMs = 2000): Promise<UdpMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no datagram within ${timeoutMs} ms`)), timeoutMs);
    association.once('message', (m) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
}

describe('proxy URLs', () => {
  test('socks5, socks5h, credentials, IPv6 and the default port', () => {
    assert.deepEqual(parseProxy('socks5://127.0.0.1:1081'), { host: '127.0.0.1', port: 1081, remoteDns: false });
    assert.deepEqual(parseProxy('socks5h://al%20ice:p%40ss@[::1]'), { host: '::1', port: 1080, remoteDns: true, username: 'al ice', password: 'p@ss' });
    assert.throws(() => parseProxy('http://127.0.0.1:8080'), { code: 'ERR_PROXY_URL', message: /scheme "http" is not socks5/ });
    assert.throws(() => parseProxy('not a url'), { code: 'ERR_PROXY_URL' });
    assert.throws(() => parseProxy({ host: 'x', port: 0 }), { code: 'ERR_PROXY_OPTIONS' });
  });
});

for (const server of ['socksgate', 'Dante'] as const) {
  describe(`client library against ${server}`, () => {
    let proxy: string;
    let closeProxy: () => Promise<void>;
    let echo: Awaited<ReturnType<typeof startEcho>>;
    let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
    before(async () => {
      echo = await startEcho();
      udpEcho = await startUdpEcho();
      const running = server === 'socksgate' ? await startSocks() : await startDante();
      proxy = `socks5://127.0.0.1:${running.port}`;
      closeProxy = () => running.close();
    });
    after(async () => {
      udpEcho.close();
      await Promise.all([closeProxy(), echo.close()]);
    });

    test('connect(): a duplex stream to the target', async () => {
      const socket = await connect({ proxy, host: '127.0.0.1', port: echo.port });
      const peer = new Peer(socket);
      const data = randomBytes(100_000);
      peer.write(data);
      assert.ok((await peer.read(data.length)).equals(data));
      peer.destroy();
    });

    test('connect() to a closed port fails with the reply code', async () => {
      const closed = await startEcho();
      const port = closed.port;
      await closed.close();
      await assert.rejects(connect({ proxy, host: '127.0.0.1', port }), (error: SocksError) => {
        assert.equal(error.code, 'ERR_SOCKS_REPLY');
        assert.equal(error.reply, 0x05);
        assert.match(error.message, /0x05 connection refused/);
        return true;
      });
    });

    test('bind(): where to connect, then the relayed connection', async () => {
      const handle = await bind({ proxy, host: '127.0.0.1' });
      assert.equal(handle.bound.host, '127.0.0.1');
      const incoming = await Peer.connect(handle.bound.port, handle.bound.host);
      const { socket, remote } = await handle.accepted;
      assert.equal(remote.host, '127.0.0.1');
      const peer = new Peer(socket);
      incoming.write('ping over bind');
      assert.equal((await peer.read(14)).toString(), 'ping over bind');
      peer.destroy();
      incoming.destroy();
    });

    test('associate(): send, message events and for-await, byte-exact, then close', async () => {
      const udp = await associate({ proxy });
      const localPort = udp.localPort;
      assert.ok(localPort > 0);
      try {
        assert.equal(udp.relay.host, '127.0.0.1');
        for (const size of [0, 1, 512, 1400, 9000]) {
          const payload = randomBytes(size);
          const reply = nextMessage(udp);
          await udp.send(payload, '127.0.0.1', udpEcho.port);
          const got = await reply;
          assert.ok(got.payload.equals(payload), `size ${size}`);
          assert.deepEqual([got.from.host, got.from.port], ['127.0.0.1', udpEcho.port]);
        }
        await udp.send(Buffer.from('iterated'), '127.0.0.1', udpEcho.port);
        for await (const message of udp) {
          assert.equal(message.payload.toString(), 'iterated');
          break;
        }
      } finally {
        udp.close();
      }
      assert.equal(udp.isClosed, true);
      assert.equal(udp.localPort, localPort, 'the local port stays readable after close');
      await assert.rejects(udp.send(Buffer.from('x'), '127.0.0.1', udpEcho.port), { code: 'ERR_CLOSED' });
    });

    test('maxDatagramSize(): finds the largest payload that makes the round trip', async () => {
      const udp = await associate({ proxy });
      try {
        const size = await maxDatagramSize(udp, { host: '127.0.0.1', port: udpEcho.port, min: 1000, max: 65507, timeoutMs: 500, attempts: 1 });
        // Over loopback both servers pass 65,497 bytes (65,507 with a 10-byte SOCKS header) to the echo and back.
        assert.equal(size, 65497);
      } finally {
        udp.close();
      }
    });
  });
}

describe('client library behaviour (against socksgate)', () => {
  test('credentials from the URL; a wrong password and a missing one are typed errors', async () => {
    const socks = await startSocks({ users: UserStore.fromEntries([['ann', await hashPassword(Buffer.from('pw'), 10)]]) });
    const echo = await startEcho();
    try {
      const socket = await connect({ proxy: `socks5://ann:pw@127.0.0.1:${socks.port}`, host: '127.0.0.1', port: echo.port });
      socket.destroy();
      await assert.rejects(connect({ proxy: `socks5://ann:nope@127.0.0.1:${socks.port}`, host: '127.0.0.1', port: echo.port }), { code: 'ERR_AUTH_FAILED' });
      await assert.rejects(connect({ proxy: `socks5://127.0.0.1:${socks.port}`, host: '127.0.0.1', port: echo.port }), {
        code: 'ERR_NO_ACCEPTABLE_METHOD',
        message: /put the username and password in the proxy URL/,
      });
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });

  test('socks5h sends names to the proxy; socks5 resolves them here', async () => {
    const dns = await startDnsmasq({ 'far.test': ['127.0.0.1'] });
    const socks = await startSocks({ dnsServers: [dns.server] });
    const echo = await startEcho();
    try {
      const socket = await connect({ proxy: `socks5h://127.0.0.1:${socks.port}`, host: 'far.test', port: echo.port });
      socket.destroy();
      // Here the name is looked up by this process, through /etc/hosts only (localhost).
      const local = await connect({ proxy: `socks5://127.0.0.1:${socks.port}`, host: 'localhost', port: echo.port });
      local.destroy();
    } finally {
      await Promise.all([socks.close(), echo.close(), dns.close()]);
    }
  });

  test('unreachable proxy, timeout and abort are typed errors', async () => {
    const closed = await startEcho();
    const port = closed.port;
    await closed.close();
    await assert.rejects(connect({ proxy: `socks5://127.0.0.1:${port}`, host: '127.0.0.1', port: 9 }), { code: 'ERR_PROXY_UNREACHABLE' });
    // A "proxy" that accepts and never answers.
    const silent = await startEcho();
    const { createServer } = await import('node:net');
    const mute = createServer(() => {});
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const mutePort = (mute.address() as { port: number }).port;
    try {
      await assert.rejects(connect({ proxy: `socks5://127.0.0.1:${mutePort}`, host: '127.0.0.1', port: 9, timeoutMs: 200 }), { code: 'ERR_TIMEOUT' });
      const controller = new AbortController();
      const pending = connect({ proxy: `socks5://127.0.0.1:${mutePort}`, host: '127.0.0.1', port: 9, signal: controller.signal });
      controller.abort();
      await assert.rejects(pending, { code: 'ERR_ABORTED' });
    } finally {
      mute.close();
      await silent.close();
    }
  });

  test('the association ends when the proxy ends it, with a close event', async () => {
    const socks = await startSocks();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}` });
    const closed = new Promise<SocksError | null>((resolve) => udp.once('close', resolve));
    await socks.close();
    const error = await closed;
    assert.equal(error?.code, 'ERR_CONTROL_CLOSED');
    assert.equal(udp.isClosed, true);
  });

  test('reassociate: a lost control connection is replaced, with an event naming the new relay', async () => {
    const socks = await startSocks();
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, reassociate: { initialDelayMs: 20 } });
    try {
      const first = udp.relay.port;
      const events: string[] = [];
      udp.on('disconnect', () => events.push('disconnect'));
      const renewed = new Promise<number>((resolve) => udp.once('reassociate', (relay) => resolve(relay.port)));
      // The proxy drops every session (as on a restart of its sessions); the listener stays.
      for (const session of (socks.server as unknown as { sessions: Set<{ close(r: string): void }> }).sessions) session.close('test');
      const second = await renewed;
      assert.notEqual(second, first);
      assert.deepEqual(events, ['disconnect']);
      const reply = nextMessage(udp);
      await udp.send(Buffer.from('after reassociation'), '127.0.0.1', udpEcho.port);
      assert.equal((await reply).payload.toString(), 'after reassociation');
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });

  test('application keepalive sends a datagram every interval', async () => {
    const socks = await startSocks();
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, keepalive: { intervalMs: 50, host: '127.0.0.1', port: udpEcho.port, payload: Buffer.from('ka') } });
    try {
      await waitFor(() => udpEcho.received() >= 3, 3000, 'three keepalives');
      assert.deepEqual(udpEcho.sizes.slice(0, 3), [2, 2, 2]);
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });
});

describe('client library: UDP over TCP (transport: tcp)', () => {
  test('datagrams in frames on the TCP connection, byte-exact, through socksgate', async () => {
    const socks = await startSocks();
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, transport: 'tcp' });
    try {
      assert.equal(udp.transport, 'tcp');
      for (const size of [0, 1, 1400, 30_000]) {
        const payload = randomBytes(size);
        const reply = nextMessage(udp);
        await udp.send(payload, '127.0.0.1', udpEcho.port);
        const got = await reply;
        assert.ok(got.payload.equals(payload), `size ${size}`);
        assert.deepEqual([got.from.host, got.from.port], ['127.0.0.1', udpEcho.port]);
      }
      assert.equal(socks.server.snapshot()[0]?.command, 'udp-over-tcp');
      assert.equal(await maxDatagramSize(udp, { host: '127.0.0.1', port: udpEcho.port, min: 60_000, timeoutMs: 500, attempts: 1 }), 65497);
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });

  test('a server without UDP over TCP (Dante) is a typed error, not a hang', async () => {
    const dante = await startDante();
    try {
      await assert.rejects(associate({ proxy: `socks5://127.0.0.1:${dante.port}`, transport: 'tcp', timeoutMs: 3000 }), (error: SocksError) => {
        assert.ok(['ERR_PROXY_CLOSED', 'ERR_SOCKS_REPLY'].includes(error.code), error.code);
        return true;
      });
    } finally {
      await dante.close();
    }
  });
});

describe('client library: transport auto', () => {
  test('stays on UDP when UDP answers', async () => {
    const socks = await startSocks();
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, transport: 'auto', autoTimeoutMs: 300 });
    try {
      const reply = nextMessage(udp);
      await udp.send(Buffer.from('over udp'), '127.0.0.1', udpEcho.port);
      assert.equal((await reply).payload.toString(), 'over udp');
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(udp.transport, 'udp');
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });

  test('moves to TCP when the UDP path is broken, and resends what went unanswered', async () => {
    // A relay address this IPv4 client cannot send to: the UDP path is dead, TCP is fine.
    const socks = await startSocks({ udp: { advertise: '::1' } });
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, transport: 'auto', autoTimeoutMs: 300 });
    try {
      const moved = new Promise<string>((resolve) => udp.once('transport', resolve));
      const reply = nextMessage(udp, 5000);
      await udp.send(Buffer.from('first try'), '127.0.0.1', udpEcho.port);
      assert.equal(await moved, 'tcp');
      assert.equal(udp.transport, 'tcp');
      assert.equal((await reply).payload.toString(), 'first try');
      const next = nextMessage(udp);
      await udp.send(Buffer.from('then tcp'), '127.0.0.1', udpEcho.port);
      assert.equal((await next).payload.toString(), 'then tcp');
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });

  test('moves to TCP when UDP datagrams silently go nowhere, after autoTimeoutMs', async () => {
    // Fixed-port mode listening on 127.0.0.1 but advertising 127.0.0.9: datagrams sent there are lost.
    const socks = await startSocks({ udp: { port: 0, advertise: '127.0.0.9' } });
    const udpEcho = await startUdpEcho();
    const udp = await associate({ proxy: `socks5://127.0.0.1:${socks.port}`, transport: 'auto', autoTimeoutMs: 300 });
    try {
      const started = Date.now();
      const reply = nextMessage(udp, 5000);
      await udp.send(Buffer.from('lost over udp'), '127.0.0.1', udpEcho.port);
      assert.equal((await reply).payload.toString(), 'lost over udp');
      assert.ok(Date.now() - started >= 250, 'not before the auto timeout');
      assert.equal(udp.transport, 'tcp');
    } finally {
      udp.close();
      udpEcho.close();
      await socks.close();
    }
  });
});
