import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';

const users = UserStore.fromEntries([['alice', await hashPassword(Buffer.from('wonderland'), 10)]]);

describe('method selection and username/password (RFC 1928 §3, RFC 1929)', () => {
  let open: Awaited<ReturnType<typeof startSocks>>;
  let guarded: Awaited<ReturnType<typeof startSocks>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    open = await startSocks();
    guarded = await startSocks({ users });
    echo = await startEcho();
  });
  after(async () => {
    await Promise.all([open.close(), guarded.close(), echo.close()]);
  });

  test('without users the server selects 0x00 and never 0x02', async () => {
    const peer = await Peer.connect(open.port);
    peer.write(greeting(2, 0));
    assert.deepEqual(await peer.read(2), Buffer.from([5, 0]));
    peer.destroy();
  });

  test('without users a client offering only 0x02 gets 0xFF and a close', async () => {
    const peer = await Peer.connect(open.port);
    peer.write(greeting(2));
    assert.deepEqual(await peer.read(2), Buffer.from([5, 0xff]));
    await peer.readToEnd();
  });

  test('with users, a client offering only 0x00 gets 0xFF and a close', async () => {
    const peer = await Peer.connect(guarded.port);
    peer.write(greeting(0));
    assert.deepEqual(await peer.read(2), Buffer.from([5, 0xff]));
    await peer.readToEnd();
  });

  test('zero methods gets 0xFF and a close', async () => {
    const peer = await Peer.connect(open.port);
    peer.write(Buffer.from([5, 0]));
    assert.deepEqual(await peer.read(2), Buffer.from([5, 0xff]));
    await peer.readToEnd();
  });

  test('with users, 0x02 is selected even when 0x00 is offered first; the right password gets 0x00', async () => {
    const peer = await Peer.connect(guarded.port);
    peer.write(greeting(0, 2));
    assert.deepEqual(await peer.read(2), Buffer.from([5, 2]));
    peer.write(userPass('alice', 'wonderland'));
    assert.deepEqual(await peer.read(2), Buffer.from([1, 0]));
    peer.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(peer)).code, 0);
    peer.write('hello');
    assert.equal((await peer.read(5)).toString(), 'hello');
    peer.destroy();
  });

  test('a wrong password gets status 0x01 and a close; so does an unknown user', async () => {
    for (const [user, pass] of [['alice', 'wonderlan'], ['bob', 'wonderland']] as const) {
      const peer = await Peer.connect(guarded.port);
      peer.write(greeting(2));
      await peer.read(2);
      peer.write(userPass(user, pass));
      assert.deepEqual(await peer.read(2), Buffer.from([1, 1]));
      // A request pipelined after bad credentials is never served.
      peer.write(request(1, '127.0.0.1', echo.port));
      assert.equal((await peer.readToEnd()).length, 0);
    }
  });

  test('greeting, credentials, request and data pipelined in one write', async () => {
    const peer = await Peer.connect(guarded.port);
    peer.write(Buffer.concat([greeting(2), userPass('alice', 'wonderland'), request(1, '127.0.0.1', echo.port), Buffer.from('early bytes')]));
    assert.deepEqual(await peer.read(4), Buffer.from([5, 2, 1, 0]));
    assert.equal((await readReply(peer)).code, 0);
    assert.equal((await peer.read(11)).toString(), 'early bytes');
    peer.destroy();
  });

  test('with users, a pipelined request followed at once by a FIN is still served', async () => {
    const peer = await Peer.connect(guarded.port);
    peer.end(Buffer.concat([greeting(2), userPass('alice', 'wonderland'), request(1, '127.0.0.1', echo.port), Buffer.from('hello')]));
    assert.deepEqual(await peer.read(4), Buffer.from([5, 2, 1, 0]));
    assert.equal((await readReply(peer)).code, 0);
    assert.equal((await peer.readToEnd()).toString(), 'hello');
  });

  test('a handshake dribbled one byte per write', async () => {
    const peer = await Peer.connect(guarded.port);
    const bytes = Buffer.concat([greeting(2), userPass('alice', 'wonderland'), request(1, 'localhost', echo.port)]);
    for (const byte of bytes) {
      peer.write(Buffer.from([byte]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.deepEqual(await peer.read(4), Buffer.from([5, 2, 1, 0]));
    assert.equal((await readReply(peer)).code, 0);
    peer.destroy();
  });
});

describe('bad input gets the RFC reply code, then a close, and the server keeps serving', () => {
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    socks = await startSocks({ handshakeTimeoutMs: 300 });
    echo = await startEcho();
  });
  after(async () => {
    await Promise.all([socks.close(), echo.close()]);
  });

  async function afterHandshake(bytes: Buffer): Promise<Peer> {
    const peer = await Peer.connect(socks.port);
    await handshake(peer);
    peer.write(bytes);
    return peer;
  }

  test('unknown command: 0x07', async () => {
    const peer = await afterHandshake(Buffer.from([5, 9, 0, 1, 127, 0, 0, 1, 0, 80]));
    assert.equal((await readReply(peer)).code, 0x07);
    await peer.readToEnd();
  });

  test('unknown address type: 0x08', async () => {
    const peer = await afterHandshake(Buffer.from([5, 1, 0, 7, 127, 0, 0, 1, 0, 80]));
    assert.equal((await readReply(peer)).code, 0x08);
    await peer.readToEnd();
  });

  test('domain of length 0: 0x04', async () => {
    const peer = await afterHandshake(Buffer.from([5, 1, 0, 3, 0, 0, 80]));
    assert.equal((await readReply(peer)).code, 0x04);
    await peer.readToEnd();
  });

  test('a domain with a NUL or other non-host-name byte: 0x04 (rules and resolver must read one name)', async () => {
    const name = Buffer.from('localhost\0.example.org', 'latin1');
    const peer = await afterHandshake(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([0, 80])]));
    assert.equal((await readReply(peer)).code, 0x04);
    await peer.readToEnd();
  });

  test('wrong version in the request: 0x01', async () => {
    const peer = await afterHandshake(Buffer.from([4, 1, 0, 1, 127, 0, 0, 1, 0, 80]));
    assert.equal((await readReply(peer)).code, 0x01);
    await peer.readToEnd();
  });

  test('garbage and SOCKS4 greetings are closed without a reply', async () => {
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0])]) {
      const peer = await Peer.connect(socks.port);
      peer.write(bytes);
      assert.equal((await peer.readToEnd()).length, 0);
    }
  });

  test('a truncated request and a silent client are dropped at the handshake timeout', async () => {
    const silent = await Peer.connect(socks.port);
    const truncated = await afterHandshake(Buffer.from([5, 1, 0, 3, 20, 0x61]));
    // Closed by the server's handshake timeout (the peers would wait far longer for anything else).
    await silent.closed(30_000);
    await truncated.closed(30_000);
  });

  test('a client that closes mid-handshake leaves nothing behind', async () => {
    const peer = await Peer.connect(socks.port);
    peer.write(Buffer.from([5, 1]));
    peer.destroy();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the session to close');
  });

  test('after all of that a well-behaved client is still served', async () => {
    const peer = await afterHandshake(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(peer)).code, 0);
    peer.write('still here');
    assert.equal((await peer.read(10)).toString(), 'still here');
    peer.destroy();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'all sessions to close');
  });
});

describe('maximum concurrent clients', () => {
  test('connections beyond maxClients are closed at once, and served again once others leave', async () => {
    const socks = await startSocks({ maxClients: 2 });
    try {
      const a = await Peer.connect(socks.port);
      const b = await Peer.connect(socks.port);
      await waitFor(() => socks.server.sessionCount === 2, 3000, 'two sessions');
      const c = await Peer.connect(socks.port);
      c.write(greeting(0));
      await c.closed();
      assert.equal(socks.server.refusedCount, 1);
      a.destroy();
      await waitFor(() => socks.server.sessionCount === 1, 3000, 'one session');
      const d = await Peer.connect(socks.port);
      d.write(greeting(0));
      assert.deepEqual(await d.read(2), Buffer.from([5, 0]));
      b.destroy();
      d.destroy();
    } finally {
      await socks.close();
    }
  });
});

describe('the same over IPv6 (::1)', () => {
  test('username/password, pipelining, bad input reply codes and the handshake timeout on an IPv6 listener', async () => {
    const echo = await startEcho('::1');
    const socks = await startSocks({ users, handshakeTimeoutMs: 300 }, '::1');
    try {
      const good = await Peer.connect(socks.port, '::1');
      good.write(Buffer.concat([greeting(0, 2), userPass('alice', 'wonderland'), request(1, '::1', echo.port), Buffer.from('six')]));
      assert.deepEqual(await good.read(4), Buffer.from([5, 2, 1, 0]));
      const reply = await readReply(good);
      assert.deepEqual([reply.code, reply.atyp, reply.host], [0, 4, '::1']);
      assert.equal((await good.read(3)).toString(), 'six');
      good.destroy();
      const wrong = await Peer.connect(socks.port, '::1');
      wrong.write(Buffer.concat([greeting(2), userPass('alice', 'nope')]));
      assert.deepEqual(await wrong.read(4), Buffer.from([5, 2, 1, 1]));
      await wrong.readToEnd();
      for (const [bytes, code] of [[Buffer.from([5, 9, 0, 4, ...new Array(15).fill(0), 1, 0, 80]), 0x07], [Buffer.from([5, 1, 0, 6, 0, 80]), 0x08]] as const) {
        const peer = await Peer.connect(socks.port, '::1');
        await handshake(peer, { user: 'alice', pass: 'wonderland' });
        peer.write(bytes);
        assert.equal((await readReply(peer)).code, code);
        await peer.readToEnd();
      }
      const silent = await Peer.connect(socks.port, '::1');
      await silent.closed(3000);
      await waitFor(() => socks.server.sessionCount === 0, 3000, 'all sessions to end');
    } finally {
      await Promise.all([socks.close(), echo.close()]);
    }
  });
});
