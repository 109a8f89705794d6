import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Peer, waitFor } from '../helpers/peer.js';
import { startBlackhole, startCollector, startDnsmasq, startEcho, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

async function connectThrough(socksPort: number, host: string, port: number, proxyHost = '127.0.0.1'): Promise<{ peer: Peer; reply: Awaited<ReturnType<typeof readReply>> }> {
  const peer = await Peer.connect(socksPort, proxyHost);
  await handshake(peer);
  peer.write(request(1, host, port));
  return { peer, reply: await readReply(peer, 12_000) };
}

describe('CONNECT (RFC 1928 §4)', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let socks6: Awaited<ReturnType<typeof startSocks>>;
  let echo4: Awaited<ReturnType<typeof startEcho>>;
  let echo6: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    dns = await startDnsmasq({ 'both.test': ['::1', '127.0.0.1'], 'six.test': ['::1'], 'four.test': ['127.0.0.1'] });
    socks = await startSocks({ dnsServers: [dns.server] });
    socks6 = await startSocks({ dnsServers: [dns.server] }, '::1');
    echo4 = await startEcho('127.0.0.1');
    echo6 = await startEcho('::1');
  });
  after(async () => {
    await Promise.all([socks.close(), socks6.close(), echo4.close(), echo6.close(), dns.close()]);
  });

  test('IPv4 target: BND is the outbound socket the target sees, bytes echo exactly', async () => {
    const { peer, reply } = await connectThrough(socks.port, '127.0.0.1', echo4.port);
    assert.equal(reply.code, 0);
    assert.equal(reply.atyp, 1);
    const payload = randomBytes(1000);
    peer.write(payload);
    assert.deepEqual(await peer.read(1000), payload);
    assert.equal(echo4.peers.at(-1), `${reply.host}:${reply.port}`);
    peer.destroy();
  });

  test('IPv6 target through an IPv6 listener', async () => {
    const { peer, reply } = await connectThrough(socks6.port, '::1', echo6.port, '::1');
    assert.equal(reply.code, 0);
    assert.equal(reply.atyp, 4);
    assert.equal(reply.host, '::1');
    assert.equal(echo6.peers.at(-1), `::1:${reply.port}`);
    peer.write('six');
    assert.equal((await peer.read(3)).toString(), 'six');
    peer.destroy();
  });

  test('domain targets are resolved by the proxy, and every address is tried', async () => {
    // both.test is ::1 and 127.0.0.1; the target listens on one family only, so one attempt is refused.
    for (const [name, target] of [['both.test', echo4], ['both.test', echo6], ['four.test', echo4], ['six.test', echo6]] as const) {
      const { peer, reply } = await connectThrough(socks.port, name, target.port);
      assert.equal(reply.code, 0, `${name} → port ${target.port}`);
      peer.write(name);
      assert.equal((await peer.read(name.length)).toString(), name);
      peer.destroy();
    }
  });

  test('refused: 0x05; unknown name: 0x04', async () => {
    const closed = await startEcho();
    const port = closed.port;
    await closed.close();
    const refused = await connectThrough(socks.port, '127.0.0.1', port);
    assert.equal(refused.reply.code, 0x05);
    await refused.peer.readToEnd();
    const unknown = await connectThrough(socks.port, 'absent.test', 80);
    assert.equal(unknown.reply.code, 0x04);
    await unknown.peer.readToEnd();
  });

  test('half-close: a client that shuts its write side still receives the whole answer', async () => {
    const collector = await startCollector((received) => Buffer.concat([Buffer.from(`${received.length}:`), createHash('sha256').update(received).digest()]));
    try {
      const { peer, reply } = await connectThrough(socks.port, '127.0.0.1', collector.port);
      assert.equal(reply.code, 0);
      const data = randomBytes(300_000);
      peer.end(data);
      const answer = await peer.readToEnd();
      assert.equal(answer.subarray(0, 7).toString(), '300000:');
      assert.deepEqual(answer.subarray(7), createHash('sha256').update(data).digest());
    } finally {
      await collector.close();
    }
  });

  test('a request followed at once by data and a FIN is relayed, FIN included', async () => {
    const collector = await startCollector((received) => Buffer.from(`got ${received.toString()}`));
    try {
      const peer = await Peer.connect(socks.port);
      await handshake(peer);
      peer.end(Buffer.concat([request(1, '127.0.0.1', collector.port), Buffer.from('ping')]));
      assert.equal((await readReply(peer)).code, 0);
      assert.equal((await peer.readToEnd()).toString(), 'got ping');
    } finally {
      await collector.close();
    }
  });

  test('32 MiB each way arrive intact (backpressure both ways)', async () => {
    const { peer, reply } = await connectThrough(socks.port, '127.0.0.1', echo4.port);
    assert.equal(reply.code, 0);
    const block = randomBytes(1 << 20);
    const sent = createHash('sha256');
    const got = createHash('sha256');
    let received = 0;
    const total = 32 << 20;
    const done = new Promise<void>((resolve) => {
      peer.socket.removeAllListeners('data');
      peer.socket.on('data', (chunk: Buffer) => {
        got.update(chunk);
        received += chunk.length;
        if (received >= total) resolve();
      });
    });
    for (let i = 0; i < 32; i++) {
      sent.update(block);
      if (!peer.socket.write(block)) await new Promise((resolve) => peer.socket.once('drain', resolve));
    }
    await done;
    assert.equal(received, total);
    assert.equal(got.digest('hex'), sent.digest('hex'));
    peer.destroy();
  });

  test('sessions end cleanly: no session left once clients are gone', async () => {
    await waitFor(() => socks.server.sessionCount === 0 && socks6.server.sessionCount === 0, 3000, 'sessions to close');
  });
});

describe('CONNECT timeouts', () => {
  test('an idle relay is closed after idleTimeout', async () => {
    const socks = await startSocks({ idleTimeoutMs: 300 });
    const echo = await startEcho();
    try {
      const { peer, reply } = await connectThrough(socks.port, '127.0.0.1', echo.port);
      assert.equal(reply.code, 0);
      peer.write('x');
      await peer.read(1);
      const started = Date.now();
      await peer.closed(3000);
      assert.ok(Date.now() - started >= 250, 'not before the idle timeout');
      await waitFor(() => socks.server.sessionCount === 0, 3000, 'session to close');
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });

  test('a destination that never answers: 0x04 after connectTimeout', async () => {
    const socks = await startSocks({ connectTimeoutMs: 400 });
    const blackhole = await startBlackhole();
    try {
      const started = Date.now();
      const { peer, reply } = await connectThrough(socks.port, '127.0.0.1', blackhole.port);
      const elapsed = Date.now() - started;
      assert.equal(reply.code, 0x04);
      // Not before the timeout; how much later depends on the machine's load, so no upper bound.
      assert.ok(elapsed >= 350, `answered after ${elapsed} ms`);
      await peer.readToEnd();
    } finally {
      await Promise.all([socks.close(), blackhole.close()]);
    }
  });
});
