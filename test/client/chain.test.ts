// Parity with what people use `socks` for: chains of proxies (CONNECT, BIND, and datagrams over TCP to
// the last hop), the reply's bound address, an existing socket, a local address and socket options,
// with the timeout and the AbortSignal per hop. Real socksgate servers (and Dante as a middle hop).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { associate, bind, connect, connectWithReply, type SocksError } from 'socksgate-client';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startDante, startEcho, startSocks } from '../helpers/servers.js';
import { startUdpEcho } from '../helpers/udp.js';

async function roundTrip(socket: Socket, size: number): Promise<void> {
  const peer = new Peer(socket);
  const data = randomBytes(size);
  peer.write(data);
  assert.ok((await peer.read(data.length)).equals(data), `${size} bytes came back byte for byte`);
  peer.destroy();
}

describe('chains of proxies', () => {
  let a: Awaited<ReturnType<typeof startSocks>>;
  let b: Awaited<ReturnType<typeof startSocks>>;
  let c: Awaited<ReturnType<typeof startSocks>>;
  let dante: Awaited<ReturnType<typeof startDante>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  before(async () => {
    a = await startSocks();
    b = await startSocks({ users: UserStore.fromEntries([['bob', await hashPassword(Buffer.from('b-pass'), 10)]]) });
    c = await startSocks();
    dante = await startDante();
    echo = await startEcho();
    udpEcho = await startUdpEcho();
  });
  after(async () => {
    udpEcho.close();
    await Promise.all([a.close(), b.close(), c.close(), dante.close(), echo.close()]);
  });

  test('CONNECT through three proxies (one of them Dante, one with a login): every hop carries one session', async () => {
    const { socket, bound, hops } = await connectWithReply({
      proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${dante.port}`, `socks5h://bob:b-pass@127.0.0.1:${b.port}`, { host: '127.0.0.1', port: c.port }],
      host: '127.0.0.1',
      port: echo.port,
    });
    assert.deepEqual(hops.map((h) => h.port), [a.port, dante.port, b.port, c.port]);
    for (const hop of [a, b, c]) assert.deepEqual(hop.server.sessionsByCommand(), { connect: 1 }, `hop on ${hop.port} relays the tunnel`);
    // The last proxy's BND.ADDR:BND.PORT is the address the echo server saw the connection come from.
    assert.equal(echo.peers.at(-1), `${bound.host}:${bound.port}`);
    await roundTrip(socket, 200_000);
  });

  test('a hop that refuses is named in the error; a wrong password at hop 2 is ERR_AUTH_FAILED for hop 2', async () => {
    await assert.rejects(connect({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://bob:wrong@127.0.0.1:${b.port}`], host: '127.0.0.1', port: echo.port }), (error: SocksError) => {
      assert.equal(error.code, 'ERR_AUTH_FAILED');
      assert.match(error.message, new RegExp(`proxy 127\\.0\\.0\\.1:${b.port} rejected`));
      return true;
    });
    const closed = await startEcho();
    const port = closed.port;
    await closed.close();
    await assert.rejects(connect({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${port}`], host: '127.0.0.1', port: echo.port }), (error: SocksError) => {
      assert.equal(error.code, 'ERR_SOCKS_REPLY');
      assert.equal(error.reply, 0x05);
      assert.match(error.message, new RegExp(`proxy 127\\.0\\.0\\.1:${a.port} refused the request for 127\\.0\\.0\\.1:${port}`));
      return true;
    });
  });

  test('BIND at the end of a chain', async () => {
    const handle = await bind({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${c.port}`], host: '127.0.0.1' });
    const incoming = await Peer.connect(handle.bound.port, handle.bound.host);
    const { socket } = await handle.accepted;
    const peer = new Peer(socket);
    const data = randomBytes(10_000);
    incoming.write(data);
    assert.ok((await peer.read(data.length)).equals(data));
    peer.destroy();
    incoming.destroy();
  });

  test('datagrams through a chain travel over TCP to the last hop; UDP through a chain is refused up front', async () => {
    const udp = await associate({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${dante.port}`, `socks5h://127.0.0.1:${c.port}`] });
    try {
      assert.equal(udp.transport, 'tcp');
      for (const size of [0, 1, 1400, 9000]) {
        const payload = randomBytes(size);
        const back = new Promise<Buffer>((resolve) => udp.once('message', (m) => resolve(m.payload)));
        await udp.send(payload, '127.0.0.1', udpEcho.port);
        assert.ok((await back).equals(payload), `size ${size}`);
      }
      assert.equal(c.server.sessionsByCommand()['udp-over-tcp'], 1, 'the last hop relays the datagrams over TCP');
    } finally {
      udp.close();
    }
    await assert.rejects(associate({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${c.port}`], transport: 'udp' }), { code: 'ERR_CHAIN_UDP', message: /transport 'tcp'/ });
  });

  test('the timeout and the AbortSignal hold for every hop', async () => {
    const mute = createServer(() => {});
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const mutePort = (mute.address() as { port: number }).port;
    try {
      await assert.rejects(connect({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${mutePort}`], host: '127.0.0.1', port: echo.port, timeoutMs: 300 }), {
        code: 'ERR_TIMEOUT',
        message: new RegExp(`handshake with 127\\.0\\.0\\.1:${mutePort}`),
      });
      const controller = new AbortController();
      const tunnels = a.server.sessionsByCommand()['connect'] ?? 0;
      const pending = connect({ proxy: [`socks5h://127.0.0.1:${a.port}`, `socks5h://127.0.0.1:${mutePort}`], host: '127.0.0.1', port: echo.port, signal: controller.signal });
      // Abort once the first hop carries the tunnel to the mute one.
      await waitFor(() => (a.server.sessionsByCommand()['connect'] ?? 0) > tunnels, 5000, 'the first hop to carry the tunnel');
      controller.abort();
      await assert.rejects(pending, { code: 'ERR_ABORTED' });
    } finally {
      mute.close();
    }
  });
});

describe('the connection to the proxy', () => {
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    socks = await startSocks({ listen: [{ host: '0.0.0.0', port: 0 }] });
    echo = await startEcho();
  });
  after(async () => Promise.all([socks.close(), echo.close()]).then(() => {}));

  test('an existing socket to the proxy is used as it is', async () => {
    const existing = tcpConnect({ host: '127.0.0.1', port: socks.port });
    const socket = await connect({ proxy: { host: '127.0.0.1', port: socks.port }, socket: existing, host: '127.0.0.1', port: echo.port });
    assert.equal(socket, existing);
    await roundTrip(socket, 50_000);
  });

  test('a local address and socket options reach the connection to the proxy', async () => {
    const viaShorthand = await connect({ proxy: { host: '127.0.0.1', port: socks.port }, localAddress: '127.0.0.2', host: '127.0.0.1', port: echo.port });
    assert.equal(viaShorthand.localAddress, '127.0.0.2');
    await roundTrip(viaShorthand, 1000);
    const viaOptions = await connect({ proxy: { host: '127.0.0.1', port: socks.port }, socketOptions: { localAddress: '127.0.0.3', keepAlive: true, noDelay: false }, host: '127.0.0.1', port: echo.port });
    assert.equal(viaOptions.localAddress, '127.0.0.3');
    await roundTrip(viaOptions, 1000);
  });

  test('connectWithReply() gives BND.ADDR:BND.PORT, the address the target sees', async () => {
    const { socket, bound } = await connectWithReply({ proxy: `socks5h://127.0.0.1:${socks.port}`, host: '127.0.0.1', port: echo.port });
    assert.equal(bound.type, 'ipv4');
    assert.equal(echo.peers.at(-1), `${bound.host}:${bound.port}`);
    await roundTrip(socket, 1000);
  });
});
