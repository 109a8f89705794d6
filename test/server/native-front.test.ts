// The native front door (src/server/native-front.ts): in the native pass of `npm test` the helper
// accepts the connections and carries their bytes, while the TypeScript session reads the handshake;
// a CONNECT dialed directly stays on the helper from accept to close. Every other test of CONNECT runs
// through it too; these check what is its own: that it is used, split and slow input, a reload that
// adds users, the server's limits, shutdown, and descriptors. In the TypeScript pass the same exchanges
// must give the same answers.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { hashPassword, UserStore } from '../../src/server/users.js';
import { udpIo } from '../../src/native/addon.js';
import { Peer, waitFor } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;
const native = (): boolean => udpIo().native;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function connectThrough(port: number, target: number): Promise<Peer> {
  const peer = await Peer.connect(port);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', target));
  const reply = await readReply(peer);
  assert.equal(reply.code, 0, `reply ${reply.code}`);
  assert.equal(reply.host, '127.0.0.1');
  assert.ok(reply.port > 0);
  return peer;
}

test('front door: a CONNECT to an IP is set up by the helper, relays byte-exact with half-close, and leaves no descriptor behind', async () => {
  const echo = await startEcho();
  const socks = await startSocks();
  try {
    (await connectThrough(socks.port, echo.port)).destroy();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the warm-up to end');
    // Each connection is counted once, whichever accepted it (the helper or Node's listener).
    assert.equal(socks.server.stats.connectionsAccepted, 1);
    const fds = openFds();
    const peer = await connectThrough(socks.port, echo.port);
    await waitFor(() => socks.server.sessionCount === 1, 3000, 'the session');
    const [view] = socks.server.snapshot();
    assert.equal(view!.command, 'connect');
    assert.equal(view!.target, `127.0.0.1:${echo.port}`);
    assert.equal(view!.front, native() ? 'native' : undefined);
    const payload = Buffer.alloc(200_000, 'front door ');
    peer.write(payload);
    peer.end();
    assert.ok((await peer.readToEnd(5000)).equals(payload), 'echoed byte-exact, then the FIN passed back');
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the session to end');
    await waitFor(() => openFds() <= fds, 3000, `descriptors back to ${fds} (now ${openFds()})`);
  } finally {
    await socks.close();
    await echo.close();
  }
});

test('front door: slow, split, optimistic and unusual input is handed to the session and answered as ever', async () => {
  const echo = await startEcho();
  // A short handshake timeout: the front hands a slow client over after at most that long.
  const socks = await startSocks({ handshakeTimeoutMs: 400 });
  try {
    // Byte by byte, with pauses past the hand-over time in the middle of the request.
    const slow = await Peer.connect(socks.port);
    for (const byte of greeting(0)) slow.write(Buffer.from([byte]));
    assert.deepEqual([...(await slow.read(2))], [5, 0]);
    const req = request(1, '127.0.0.1', echo.port);
    slow.write(req.subarray(0, 3));
    await sleep(250);
    slow.write(req.subarray(3));
    assert.equal((await readReply(slow)).code, 0);
    slow.write('after a slow handshake');
    assert.equal((await slow.read(22)).toString(), 'after a slow handshake');
    slow.destroy();

    // Greeting, request and data in one write (optimistic data): nothing lost.
    const eager = await Peer.connect(socks.port);
    eager.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo.port), Buffer.from('sent ahead')]));
    assert.deepEqual([...(await eager.read(2))], [5, 0]);
    assert.equal((await readReply(eager)).code, 0);
    assert.equal((await eager.read(10)).toString(), 'sent ahead');
    eager.destroy();

    // Only username/password offered to a server without users: 0xFF, as the session answers it.
    const wrongMethod = await Peer.connect(socks.port);
    wrongMethod.write(greeting(2));
    assert.deepEqual([...(await wrongMethod.read(2))], [5, 0xff]);
    await wrongMethod.closed();

    // Not SOCKS 5 at all: closed without a reply.
    const http = await Peer.connect(socks.port);
    http.write('GET / HTTP/1.1\r\n\r\n');
    await http.closed();
    assert.equal(http.available, 0);

    // An unknown command after the greeting: reply 0x07 from the session.
    const unknown = await Peer.connect(socks.port);
    await handshake(unknown);
    unknown.write(request(9, '127.0.0.1', echo.port));
    assert.equal((await readReply(unknown)).code, 7);
    unknown.destroy();

    // Silent after connecting: the handshake timeout still ends it (counted once).
    const before = socks.server.stats.timeouts.handshake;
    const silent = await Peer.connect(socks.port);
    await silent.closed(3000);
    assert.equal(socks.server.stats.timeouts.handshake, before + 1);

    // Denied by policy (a loopback target on a server that does not allow them) and refused targets.
    const refusedPort = echo.port;
    await echo.close();
    const refused = await Peer.connect(socks.port);
    await handshake(refused);
    refused.write(request(1, '127.0.0.1', refusedPort));
    assert.equal((await readReply(refused)).code, 5);
    await refused.closed();
  } finally {
    await socks.close();
    await echo.close();
  }
});

test('front door: policy denials, the client limit, a reload that adds users, and shutdown', async () => {
  const echo = await startEcho();
  const strict = await startSocks({ allowLoopbackTargets: false });
  try {
    const denied = await Peer.connect(strict.port);
    await handshake(denied);
    denied.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(denied)).code, 2);
    await denied.closed();
  } finally {
    await strict.close();
  }

  const socks = await startSocks({ maxClients: 1 });
  try {
    const first = await connectThrough(socks.port, echo.port);
    // Over maxClients: closed without a reply (the TypeScript listener closes it at once; the front
    // door, which counts sessions when their request arrives, after the method selection).
    const second = await Peer.connect(socks.port);
    second.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo.port)]));
    await second.closed();
    assert.ok(second.available <= 2, `no reply to the request (${second.available} bytes came)`);
    assert.equal(socks.server.refusedCount, 1);
    first.destroy();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the first session to end');

    // Users added by a reload: no-authentication greetings are refused from then on.
    {
      const users = UserStore.fromEntries([['alice', await hashPassword(Buffer.from('secret'), 10)]]);
      socks.server.reload({ users, allowLoopbackTargets: true });
      const noAuth = await Peer.connect(socks.port);
      noAuth.write(greeting(0));
      assert.deepEqual([...(await noAuth.read(2))], [5, 0xff], 'no authentication is refused once there are users');
      await noAuth.closed();
      const login = await Peer.connect(socks.port);
      login.write(greeting(2));
      assert.deepEqual([...(await login.read(2))], [5, 2]);
      login.write(userPass('alice', 'secret'));
      assert.deepEqual([...(await login.read(2))], [1, 0]);
      login.destroy();
    }
  } finally {
    await socks.close();
  }

  // Shutdown: a connection that has sent nothing yet, and a live tunnel, both close.
  const fds = openFds();
  const last = await startSocks();
  try {
    const idle = await Peer.connect(last.port);
    const live = await connectThrough(last.port, echo.port);
    await last.close();
    await idle.closed(3000);
    await live.closed(3000);
    // Nothing listens any more (the helper's duplicate of the listening descriptor is closed too).
    await assert.rejects(Peer.connect(last.port), /ECONNREFUSED/);
  } finally {
    await last.close();
    await echo.close();
  }
  await waitFor(() => openFds() <= fds, 3000, `descriptors back to ${fds} (now ${openFds()})`);
});

test('front door: a burst of connections waiting at once is served whole; each session counts its bytes exactly', async () => {
  const echo = await startEcho();
  const socks = await startSocks();
  const ends: Array<{ command: string; result: string; up: number; down: number }> = [];
  socks.server.on('session-end', (end: { command: string; result: string; up: number; down: number }) => ends.push(end));
  const fds = openFds();
  try {
    // Greeting, request and data in one write, 24 clients at once: several are waiting in the backlog
    // when the listener wakes. The reply must come before the echoed bytes, written as the tunnel starts.
    const count = 24;
    const peers = await Promise.all(Array.from({ length: count }, () => Peer.connect(socks.port)));
    const payloads = peers.map((_, i) => Buffer.alloc(100 + i * 37, String.fromCharCode(97 + (i % 26))));
    peers.forEach((peer, i) => peer.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo.port), payloads[i]!])));
    await Promise.all(
      peers.map(async (peer, i) => {
        assert.deepEqual([...(await peer.read(2))], [5, 0]);
        assert.equal((await readReply(peer)).code, 0);
        peer.end();
        assert.ok((await peer.readToEnd(5000)).equals(payloads[i]!), `client ${i}: echoed byte-exact after the reply`);
      }),
    );
    await waitFor(() => ends.length === count, 3000, `${count} sessions to end (${ends.length} so far)`);
    assert.equal(socks.server.stats.connectionsAccepted, count);
    const sizes = payloads.map((p) => p.length).sort((a, b) => a - b);
    assert.deepEqual(ends.map((e) => e.up).sort((a, b) => a - b), sizes, 'bytes up: the optimistic data, counted once each');
    assert.deepEqual(ends.map((e) => e.down).sort((a, b) => a - b), sizes, 'bytes down: the echo');
    assert.ok(ends.every((e) => e.command === 'connect' && e.result === 'ok'), JSON.stringify(ends.filter((e) => e.result !== 'ok')));
  } finally {
    await socks.close();
    await echo.close();
  }
  await waitFor(() => openFds() <= fds, 3000, `descriptors back to ${fds} (now ${openFds()})`);
});
