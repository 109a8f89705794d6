import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Peer, waitFor } from '../helpers/peer.js';
import { startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

async function bindThrough(socksPort: number, expectedHost: string, proxyHost = '127.0.0.1') {
  const control = await Peer.connect(socksPort, proxyHost);
  await handshake(control);
  control.write(request(2, expectedHost, 0));
  const first = await readReply(control);
  return { control, first };
}

describe('BIND (RFC 1928 §4)', () => {
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let socks6: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    socks = await startSocks({ bindTimeoutMs: 500 });
    socks6 = await startSocks({ bindTimeoutMs: 500 }, '::1');
  });
  after(async () => {
    await Promise.all([socks.close(), socks6.close()]);
  });

  test('two replies: where it listens, then who connected; then a relay both ways', async () => {
    const { control, first } = await bindThrough(socks.port, '127.0.0.2');
    assert.equal(first.code, 0);
    assert.equal(first.host, '127.0.0.1', 'BND.ADDR is the address the client reached');
    assert.ok(first.port > 0);
    const incoming = await Peer.connect(first.port, first.host, '127.0.0.2');
    const second = await readReply(control);
    assert.equal(second.code, 0);
    assert.equal(second.host, '127.0.0.2');
    assert.equal(second.port, incoming.socket.localPort);
    incoming.write('from the far side');
    assert.equal((await control.read(17)).toString(), 'from the far side');
    control.write('from the client');
    assert.equal((await incoming.read(15)).toString(), 'from the client');
    incoming.end();
    await control.readToEnd();
    control.destroy();
  });

  test('a connection from another host is refused and the wait goes on', async () => {
    const { control, first } = await bindThrough(socks.port, '127.0.0.2');
    const stranger = await Peer.connect(first.port, first.host, '127.0.0.3');
    await stranger.closed();
    assert.equal(control.available, 0, 'no second reply for a stranger');
    const expected = await Peer.connect(first.port, first.host, '127.0.0.2');
    const second = await readReply(control);
    assert.equal(second.host, '127.0.0.2');
    expected.destroy();
    control.destroy();
  });

  test('DST.ADDR 0.0.0.0 accepts any host', async () => {
    const { control, first } = await bindThrough(socks.port, '0.0.0.0');
    const incoming = await Peer.connect(first.port, first.host, '127.0.0.9');
    assert.equal((await readReply(control)).host, '127.0.0.9');
    incoming.destroy();
    control.destroy();
  });

  test('no connection within bindTimeout: second reply 0x04 and a close', async () => {
    const { control, first } = await bindThrough(socks.port, '127.0.0.2');
    assert.equal(first.code, 0);
    const second = await readReply(control, 3000);
    assert.equal(second.code, 0x04);
    await control.readToEnd();
  });

  test('IPv6: listens on ::1 and reports the IPv6 peer', async () => {
    const { control, first } = await bindThrough(socks6.port, '::1', '::1');
    assert.equal(first.code, 0);
    assert.equal(first.atyp, 4);
    assert.equal(first.host, '::1');
    const incoming = await Peer.connect(first.port, '::1');
    const second = await readReply(control);
    assert.equal(second.host, '::1');
    assert.equal(second.port, incoming.socket.localPort);
    incoming.destroy();
    control.destroy();
  });

  test('closing the control connection while waiting closes the listener', async () => {
    const { control, first } = await bindThrough(socks.port, '127.0.0.2');
    control.destroy();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the session to close');
    await assert.rejects(Peer.connect(first.port, first.host, '127.0.0.2'), { code: 'ECONNREFUSED' });
  });

  test('a BIND ends as soon as its client goes away, long before bindTimeout: listeners and sessions back to baseline', async () => {
    // bindTimeout 60 s: only the client's going away can end these sessions within the wait below.
    const server = await startSocks({ bindTimeoutMs: 60_000 });
    try {
      const listeners = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap').length;
      const baseline = listeners();
      const binds = await Promise.all(Array.from({ length: 20 }, () => bindThrough(server.port, '127.0.0.2')));
      for (const { first } of binds) assert.equal(first.code, 0);
      assert.equal(server.server.sessionCount, 20);
      assert.equal(listeners(), baseline + 20);
      // Half close gently (FIN), half reset.
      binds.forEach(({ control }, i) => (i % 2 === 0 ? control.end() : control.destroy()));
      await waitFor(() => server.server.sessionCount === 0, 10_000, `the sessions to close (${server.server.sessionCount} left)`);
      await waitFor(() => listeners() === baseline, 10_000, `the BIND listeners to close (${listeners() - baseline} left)`);
      for (const { first } of binds) await assert.rejects(Peer.connect(first.port, first.host, '127.0.0.2'), { code: 'ECONNREFUSED' });
    } finally {
      await server.close();
    }
  });
});
