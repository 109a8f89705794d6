import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { encodeUotFrame, parseUotFrame, type UotFrame } from 'socksgate-client/protocol';
import { addressFromHost } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import { Peer, waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { startUdpEcho } from '../helpers/udp.js';

/** A raw UDP-over-TCP client: handshake, command 0x05, then frames both ways. */
async function uotClient(port: number): Promise<{ peer: Peer; code: number; send: (host: string, p: number, data: Buffer) => void; next: () => Promise<UotFrame> }> {
  const peer = await Peer.connect(port);
  await handshake(peer);
  peer.write(request(5, '0.0.0.0', 0));
  const { code } = await readReply(peer);
  const reader = new ByteReader();
  return {
    peer,
    code,
    send: (host, p, data) => peer.write(encodeUotFrame(addressFromHost(host, p), data)),
    next: async () => {
      for (;;) {
        const frame = reader.read(parseUotFrame);
        if (frame.status === 'ok') return frame.value;
        assert.notEqual(frame.status, 'error');
        reader.push(await peer.read(1, 3000));
        if (peer.available > 0) reader.push(await peer.read(peer.available));
      }
    },
  };
}

describe('UDP over TCP (command 0x05, hev-socks5 framing)', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let echo4: Awaited<ReturnType<typeof startUdpEcho>>;
  let echo6: Awaited<ReturnType<typeof startUdpEcho>>;
  before(async () => {
    dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'] });
    socks = await startSocks({ dnsServers: [dns.server], rules: [{ action: 'deny', name: 'no-7', ports: [7] }] });
    echo4 = await startUdpEcho();
    echo6 = await startUdpEcho('::1');
  });
  after(async () => {
    echo4.close();
    echo6.close();
    await Promise.all([socks.close(), dns.close()]);
  });

  test('frames go out as native UDP and come back framed with the real source, byte-exact', async () => {
    const c = await uotClient(socks.port);
    try {
      assert.equal(c.code, 0);
      for (const [host, port, source] of [['127.0.0.1', echo4.port, '127.0.0.1'], ['::1', echo6.port, '::1'], ['echo.test', echo4.port, '127.0.0.1']] as const) {
        const data = randomBytes(1200);
        c.send(host, port, data);
        const frame = await c.next();
        assert.deepEqual([frame.address.host, frame.address.port], [source, port]);
        assert.ok(frame.payload.equals(data));
      }
      // Several frames in one write, and the largest payload.
      const big = randomBytes(65507 - 10);
      c.peer.write(Buffer.concat([encodeUotFrame(addressFromHost('127.0.0.1', echo4.port), Buffer.from('a')), encodeUotFrame(addressFromHost('127.0.0.1', echo4.port), big)]));
      const first = await c.next();
      const second = await c.next();
      assert.equal(first.payload.toString(), 'a');
      assert.ok(second.payload.equals(big));
    } finally {
      c.peer.destroy();
    }
    await waitFor(() => socks.server.udpStats.activeAssociations === 0 && socks.server.sessionCount === 0, 3000, 'the session to end with its connection');
  });

  test('rules apply as for UDP ASSOCIATE; a broken frame ends the session and is counted', async () => {
    const c = await uotClient(socks.port);
    const before = { denied: socks.server.udpStats.drops.denied, malformed: socks.server.udpStats.drops.malformed };
    c.send('127.0.0.1', 7, Buffer.from('denied'));
    c.send('127.0.0.1', echo4.port, Buffer.from('allowed'));
    assert.equal((await c.next()).payload.toString(), 'allowed');
    assert.equal(socks.server.udpStats.drops.denied, before.denied + 1);
    c.peer.write(Buffer.from('0001040101020304003541', 'hex'));
    await c.peer.closed();
    assert.equal(socks.server.udpStats.drops.malformed, before.malformed + 1);
  });

  test('a congested connection drops its oldest replies instead of buffering them all', async () => {
    const c = await uotClient(socks.port);
    try {
      c.peer.socket.pause();
      // 24 MB of replies to a client that reads nothing: more than the kernel's TCP buffers hold.
      const data = randomBytes(8000);
      for (let i = 0; i < 3000 && socks.server.udpStats.drops.congested === 0; i++) {
        c.send('127.0.0.1', echo4.port, data);
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await waitFor(() => socks.server.udpStats.drops.congested > 0, 10_000, 'the queue to drop its oldest replies');
      const snapshot = socks.server.snapshot().find((s) => s.command === 'udp-over-tcp');
      assert.ok(snapshot, 'the session is listed');
    } finally {
      c.peer.destroy();
    }
  });
});
