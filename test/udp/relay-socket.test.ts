// The relay socket the association uses: the native helper's batched I/O in the native pass of
// `npm test`, dgram in the TypeScript pass (SOCKSGATE_NATIVE says which; see scripts/test.mjs).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { waitFor } from '../helpers/peer.js';
import { UdpPeer } from '../helpers/udp.js';
import { gsoCounters, setBusyPoll, udpIo } from '../../src/native/addon.js';
import { openRelay, openSharedSocket, type RelayReceiver, type RelaySocket } from '../../src/udp/relay-socket.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

/** Keeps copies of what the relay hands over (views of a transient socket do not outlive the call). */
class Collector implements RelayReceiver {
  readonly datagrams: Array<{ data: Buffer; address: string; port: number }> = [];
  readonly errors: Array<{ code: string; count: number }> = [];
  onEach: ((datagram: Buffer, address: string, port: number) => void) | null = null;

  onDatagram(datagram: Buffer, address: string, port: number): void {
    this.datagrams.push({ data: Buffer.from(datagram), address, port });
    this.onEach?.(datagram, address, port);
  }

  onSendError(code: string, count: number): void {
    this.errors.push({ code, count });
  }
}

async function withRelay(body: (relay: RelaySocket, collector: Collector) => Promise<void>): Promise<void> {
  const relay = await openRelay();
  const collector = new Collector();
  relay.receive(collector);
  try {
    await body(relay, collector);
  } finally {
    relay.close();
  }
}

const payload = (i: number, size: number): Buffer => Buffer.alloc(size, `datagram ${i} `);

test('the UDP I/O in use is the one this pass asked for', () => {
  const io = udpIo();
  if (process.env.SOCKSGATE_NATIVE === '1') {
    assert.equal(io.native, true, io.description);
    assert.match(io.description, /recvmmsg\/sendmmsg/);
  } else if (process.env.SOCKSGATE_NATIVE === '0') {
    assert.equal(io.native, false);
    assert.match(io.description, /turned off by SOCKSGATE_NATIVE=0/);
  }
});

test('relay socket: datagrams in with their sender, header + payload out, byte-exact over IPv4 and IPv6', async () => {
  await withRelay(async (relay, collector) => {
    assert.equal(relay.transient, udpIo().native);
    for (const host of ['127.0.0.1', '::1']) {
      const peer = await UdpPeer.bind(host);
      try {
        collector.datagrams.length = 0;
        const target = host === '::1' ? '::1' : relay.dualStack ? '::ffff:127.0.0.1' : '127.0.0.1';
        await peer.send(Buffer.from(`hello from ${host}`), relay.port, host);
        await waitFor(() => collector.datagrams.length === 1, 3000, 'the datagram');
        const got = collector.datagrams[0]!;
        assert.equal(got.data.toString(), `hello from ${host}`);
        assert.equal(got.address, target);
        assert.equal(got.port, peer.port);
        // Outside a batch: sent at once.
        assert.equal(relay.send(Buffer.from([1, 2, 3]), Buffer.from('reply'), peer.port, target), null);
        const reply = await peer.receive(3000);
        assert.deepEqual([...reply.data], [1, 2, 3, ...Buffer.from('reply')]);
        assert.equal(reply.from.port, relay.port);
        // The largest datagram loopback carries, whole.
        const big = payload(7, 65_000);
        await peer.send(big, relay.port, host);
        await waitFor(() => collector.datagrams.length === 2, 3000, 'the large datagram');
        assert.ok(collector.datagrams[1]!.data.equals(big));
      } finally {
        peer.close();
      }
    }
  });
});

test('relay socket: bursts are delivered whole and in order, and replies made during a batch all leave', async () => {
  await withRelay(async (relay, collector) => {
    const peer = await UdpPeer.bind('127.0.0.1');
    const to = relay.dualStack ? '::ffff:127.0.0.1' : '127.0.0.1';
    // Every datagram is answered from inside the delivery: the native helper queues these for sendmmsg.
    collector.onEach = (datagram, address, port) => {
      assert.equal(relay.send(Buffer.from('echo:'), datagram, port, address), null);
    };
    try {
      const sizes = [1, 64, 512, 1400, 4000];
      let sent = 0;
      for (let round = 0; round < 10; round++) {
        // 40 at once: more than one native batch (32), within the default receive buffer.
        for (let i = 0; i < 40; i++, sent++) await peer.send(payload(sent, sizes[sent % sizes.length]!), relay.port, '127.0.0.1');
        await waitFor(() => collector.datagrams.length === sent && peer.pending >= 40, 5000, `round ${round}`);
        for (let i = sent - 40; i < sent; i++) {
          const echo = await peer.receive(3000);
          assert.equal(echo.data.subarray(0, 5).toString(), 'echo:');
          assert.ok(echo.data.subarray(5).equals(payload(i, sizes[i % sizes.length]!)), `echo ${i} byte-exact`);
        }
      }
      assert.equal(collector.datagrams.length, 400);
      collector.datagrams.forEach((d, i) => {
        assert.ok(d.data.equals(payload(i, sizes[i % sizes.length]!)), `datagram ${i} byte-exact and in order`);
        assert.equal(d.address, to);
        assert.equal(d.port, peer.port);
      });
      assert.deepEqual(collector.errors, []);
    } finally {
      peer.close();
    }
  });
});

test('relay socket: equal-size replies to two peers from one batch arrive one datagram each, in order per peer', async () => {
  // The native helper sends runs of equal-size datagrams to one destination as one UDP GSO message;
  // the receivers must still see separate datagrams with the right bytes, in each one's order.
  await withRelay(async (relay, collector) => {
    const peers = [await UdpPeer.bind('127.0.0.1'), await UdpPeer.bind('127.0.0.1')];
    collector.onEach = (datagram, address, port) => {
      assert.equal(relay.send(Buffer.from('re:'), datagram, port, address), null);
    };
    const before = gsoCounters();
    try {
      const perPeer = 30;
      const sizeOf = (i: number): number => (i === perPeer - 1 ? 100 : 509); // the last one shorter
      const sends: Array<Promise<void>> = [];
      // Interleaved and all in one go, so that the relay reads them in one or two batches.
      for (let i = 0; i < perPeer; i++) {
        for (const [p, peer] of peers.entries()) sends.push(peer.send(payload(p * 1000 + i, sizeOf(i)), relay.port, '127.0.0.1'));
      }
      await Promise.all(sends);
      await waitFor(() => peers.every((peer) => peer.pending >= perPeer), 5000, 'every reply back');
      for (const [p, peer] of peers.entries()) {
        for (let i = 0; i < perPeer; i++) {
          const got = await peer.receive(1000);
          assert.equal(got.data.length, 3 + sizeOf(i), `peer ${p} reply ${i}: one datagram, not a merged one`);
          assert.ok(got.data.equals(Buffer.concat([Buffer.from('re:'), payload(p * 1000 + i, sizeOf(i))])), `peer ${p} reply ${i} byte-exact and in order`);
        }
        await peer.nothingFor(50);
      }
      assert.deepEqual(collector.errors, []);
      if (udpIo().native) {
        const after = gsoCounters();
        assert.ok(after.datagrams - before.datagrams >= 4, `replies went out grouped (${after.datagrams - before.datagrams} datagrams in ${after.messages - before.messages} GSO messages)`);
      }
    } finally {
      for (const peer of peers) peer.close();
    }
  });
});

test('relay socket: with busy polling on, round trips stay byte-exact and timers still fire', async (t) => {
  if (!udpIo().native) return t.skip('busy polling is the native helper\'s');
  // 1 ms of polling after each batch. The peer is a dgram socket in this same process, so its answer
  // arrives only if the polling gives way to the event loop. How fast it gives way is measured by
  // `npm run bench`, not here: a loaded machine stretches any time a test could assert.
  setBusyPoll(1000);
  const peer = await UdpPeer.bind('127.0.0.1');
  try {
    await withRelay(async (relay, collector) => {
      collector.onEach = (datagram, address, port) => {
        assert.equal(relay.send(null, datagram, port, address), null);
      };
      let timerFired = false;
      const timer = setTimeout(() => (timerFired = true), 5);
      // At least 300 rounds, and on until the timer has fired (bounded: 20,000 rounds).
      let rounds = 0;
      for (; rounds < 20_000 && (rounds < 300 || !timerFired); rounds++) {
        await peer.send(payload(rounds, 64), relay.port, '127.0.0.1');
        const echo = await peer.receive(3000);
        assert.ok(echo.data.equals(payload(rounds, 64)), `round ${rounds} byte-exact`);
      }
      clearTimeout(timer);
      assert.equal(collector.datagrams.length, rounds);
      assert.ok(timerFired, `a 5 ms timer did not fire during ${rounds} round trips`);
    });
  } finally {
    peer.close();
    setBusyPoll(20);
  }
});

test('relay socket: what the OS refuses is reported, at once or after the batch', async () => {
  await withRelay(async (relay, collector) => {
    const peer = await UdpPeer.bind('127.0.0.1');
    const to = relay.dualStack ? '::ffff:127.0.0.1' : '127.0.0.1';
    try {
      // Larger than any IPv4 datagram: the kernel refuses it with EMSGSIZE and nothing is sent.
      const huge = Buffer.alloc(65_600);
      const immediate = relay.send(null, huge, peer.port, to);
      if (udpIo().native) assert.equal(immediate, 'EMSGSIZE');
      else {
        // dgram reports it through the send callback.
        assert.equal(immediate, null);
        await waitFor(() => collector.errors.length === 1, 3000, 'the send error');
        collector.errors.length = 0;
      }
      const invalid = relay.send(null, Buffer.from('x'), peer.port, 'not an address');
      if (invalid === null) {
        await waitFor(() => collector.errors.length === 1, 3000, 'the send error');
        assert.equal(collector.errors.pop()!.code, 'EINVAL');
      } else assert.equal(invalid, 'EINVAL');
      // From inside a delivery: queued by the native helper, refused by sendmmsg, then reported.
      collector.onEach = (_datagram, address, port) => {
        assert.equal(relay.send(null, huge, port, address), null);
        assert.equal(relay.send(null, Buffer.from('after'), port, address), null);
      };
      await peer.send(Buffer.from('go'), relay.port, '127.0.0.1');
      await waitFor(() => collector.errors.length === 1, 3000, 'the refused send to be reported');
      assert.equal(collector.errors[0]!.code, 'EMSGSIZE');
      assert.equal(collector.errors[0]!.count, 1);
      // The send after the refused one still went.
      assert.equal((await peer.receive(3000)).data.toString(), 'after');
    } finally {
      peer.close();
    }
  });
});

test('relay socket: closing inside a delivery stops it, and open/close cycles leave no descriptor behind', async () => {
  const peer = await UdpPeer.bind('127.0.0.1');
  try {
    // Warm-up: whatever the first relay loads stays for the process.
    (await openRelay()).close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const fds = openFds();
    const relays: RelaySocket[] = [];
    for (let i = 0; i < 200; i++) relays.push(await openRelay());
    assert.ok(openFds() >= fds + 200);
    for (const relay of relays) relay.close();
    await waitFor(() => openFds() <= fds, 3000, `descriptors back to ${fds} (now ${openFds()})`);

    const relay = await openRelay();
    const collector = new Collector();
    collector.onEach = () => relay.close();
    relay.receive(collector);
    for (let i = 0; i < 10; i++) await peer.send(Buffer.from(`d${i}`), relay.port, '127.0.0.1');
    await waitFor(() => collector.datagrams.length >= 1, 3000, 'the first datagram');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(collector.datagrams.length, 1);
    assert.notEqual(relay.send(null, Buffer.from('late'), peer.port, '127.0.0.1'), null, 'a closed relay refuses to send');
    await waitFor(() => openFds() <= fds, 3000, 'the closed relay released');
  } finally {
    peer.close();
  }
});

test('shared socket: bound on its host and port; one port per process, or a group of sockets each hearing its own senders', async () => {
  const before = openFds();
  // Alone: on the address asked for; the port is taken.
  const alone = await openSharedSocket('127.0.0.1', 0, false);
  const heard = new Collector();
  alone.receive(heard);
  const peer = await UdpPeer.bind('127.0.0.1');
  try {
    assert.equal(alone.transient, udpIo().native);
    await peer.send(Buffer.from('to the shared socket'), alone.port, '127.0.0.1');
    await waitFor(() => heard.datagrams.length === 1, 3000, 'the datagram');
    assert.equal(heard.datagrams[0]!.data.toString(), 'to the shared socket');
    assert.equal(heard.datagrams[0]!.port, peer.port);
    assert.equal(alone.send(Buffer.from('re: '), Buffer.from('hi'), peer.port, '127.0.0.1'), null);
    assert.equal((await peer.receive(3000)).data.toString(), 're: hi');
    await assert.rejects(openSharedSocket('127.0.0.1', alone.port, false), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
  } finally {
    alone.close();
    peer.close();
  }
  if (!udpIo().native) {
    // On dgram, workers share one socket that the cluster primary binds: outside a cluster it is this process's own.
    await waitFor(() => openFds() === before, 3000, 'descriptors back to where they were');
    return;
  }
  // With the helper: each worker's own socket of one port (SO_REUSEPORT). Every sender is heard by
  // exactly one of them, always the same one, and replies leave from the shared port.
  const first = await openSharedSocket('127.0.0.1', 0, true);
  const second = await openSharedSocket('127.0.0.1', first.port, true);
  const a = new Collector(), b = new Collector();
  first.receive(a);
  second.receive(b);
  const senders = await Promise.all(Array.from({ length: 16 }, () => UdpPeer.bind('127.0.0.1')));
  try {
    assert.equal(second.port, first.port);
    for (let round = 0; round < 3; round++) {
      for (const [i, sender] of senders.entries()) await sender.send(Buffer.from(`sender ${i} round ${round}`), first.port, '127.0.0.1');
    }
    await waitFor(() => a.datagrams.length + b.datagrams.length === 48, 3000, 'every datagram, once');
    for (const sender of senders) {
      const inA = a.datagrams.filter((d) => d.port === sender.port).length, inB = b.datagrams.filter((d) => d.port === sender.port).length;
      assert.ok((inA === 3 && inB === 0) || (inA === 0 && inB === 3), `sender ${sender.port}: all three on one socket (${inA}/${inB})`);
    }
    const replier = a.datagrams.length > 0 ? first : second;
    const to = (a.datagrams[0] ?? b.datagrams[0])!.port;
    assert.equal(replier.send(null, Buffer.from('back'), to, '127.0.0.1'), null);
    const back = await senders.find((s) => s.port === to)!.receive(3000);
    assert.equal(back.data.toString(), 'back');
    assert.equal(back.from.port, first.port);
  } finally {
    first.close();
    second.close();
    for (const s of senders) s.close();
  }
  await waitFor(() => openFds() === before, 3000, 'descriptors back to where they were');
});
