// Relay socket buffers (udp.receiveBuffer, udp.sendBuffer) and the kernel drops they are meant to
// prevent, counted as udp_dropped_total{reason="kernel-overflow"}.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressFromHost } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import { encodeUotFrame, parseUotFrame } from 'socksgate-client/protocol';
import { Peer, waitFor } from '../helpers/peer.js';
import { startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { openAssociation } from '../helpers/udp.js';
import { burstWhileBlocked, startThreadEcho } from '../helpers/udp-thread.js';


const BURST = 50;
/** 1200 to 3600 bytes, 2.4 KB on average over a burst: the sizes of the burst that lost datagrams. */
const sizeOf = (i: number): number => 1200 + ((i * 977) % 2401);

test('a burst of 50 datagrams of 2.4 KB average, over UDP over TCP and echoed at once, comes back whole (20 rounds)', async (t) => {
  const echo = await startThreadEcho();
  const socks = await startSocks();
  const peer = await Peer.connect(socks.port);
  try {
    await handshake(peer);
    peer.write(request(5, '0.0.0.0', 0));
    assert.equal((await readReply(peer)).code, 0);
    const reader = new ByteReader();
    const rounds = 20;
    let back = 0;
    let bytesBack = 0;
    for (let round = 0; round < rounds; round++) {
      const frames = Array.from({ length: BURST }, (_, i) => encodeUotFrame(addressFromHost('127.0.0.1', echo.port), Buffer.alloc(sizeOf(i), round * BURST + i)));
      // One write: the server relays the whole burst at once, and the echo answers each datagram at once.
      peer.write(Buffer.concat(frames));
      const seen = new Set<number>();
      while (seen.size < BURST) {
        const frame = reader.read(parseUotFrame);
        if (frame.status === 'ok') {
          const i = frame.value.payload[0]! - ((round * BURST) & 0xff);
          const index = (i + 256) % 256;
          assert.equal(frame.value.payload.length, sizeOf(index), `round ${round}: datagram ${index} byte-exact`);
          seen.add(index);
          bytesBack += frame.value.payload.length;
          continue;
        }
        assert.notEqual(frame.status, 'error');
        // A lost datagram never comes: fail with the count rather than wait for the test's timeout.
        reader.push(await peer.read(1, 10_000).catch(() => assert.fail(`round ${round}: ${seen.size} of ${BURST} came back (${socks.server.udpStats.replyDatagrams} replies read)`)));
        if (peer.available > 0) reader.push(await peer.read(peer.available));
      }
      back += seen.size;
    }
    t.diagnostic(`${back} of ${rounds * BURST} datagrams back (${bytesBack} bytes)`);
    assert.equal(back, rounds * BURST);
    socks.server.sampleKernelDrops();
    assert.equal(socks.server.udpStats.drops['kernel-overflow'], 0);
    assert.equal(socks.server.udpStats.replyDatagrams, rounds * BURST);
  } finally {
    peer.destroy();
    await socks.close();
    await echo.close();
  }
});

test('datagrams the kernel drops on a full receive queue are counted as kernel-overflow', async () => {
  // The smallest receive buffer the kernel allows holds about two of these datagrams.
  const socks = await startSocks({ udp: { receiveBuffer: 1 } });
  const count = 200;
  const association = await openAssociation(socks.port, { declare: 'port' });
  try {
    assert.equal(association.reply.code, 0);
    const stats = socks.server.udpStats;
    // From another thread and port while this event loop (the server's) is blocked: each datagram is
    // either read and dropped by us as from a stranger ('source'), or dropped by the kernel.
    await burstWhileBlocked(association.reply.port, Array.from({ length: count }, () => 1200));
    await waitFor(
      () => {
        socks.server.sampleKernelDrops();
        return stats.drops.source + stats.drops['kernel-overflow'] === count;
      },
      10_000,
      `every datagram of the burst to be counted (source ${stats.drops.source}, kernel-overflow ${stats.drops['kernel-overflow']})`,
    );
    assert.ok(stats.drops['kernel-overflow'] > 0, 'the kernel dropped some of the burst');
  } finally {
    association.close();
    await socks.close();
  }
});

test('the default receive buffer holds two bursts of 50 (2.4 KB average) that arrive while the process is busy', async () => {
  // The kernel's default 208 KiB holds 54 of these (each costs about 3.9 KB of buffer), so a burst
  // that finds a few datagrams still queued loses some; the default udp.receiveBuffer holds 531.
  const socks = await startSocks();
  const association = await openAssociation(socks.port, { declare: 'port' });
  try {
    assert.equal(association.reply.code, 0);
    const stats = socks.server.udpStats;
    await burstWhileBlocked(association.reply.port, Array.from({ length: 2 * BURST }, (_, i) => sizeOf(i % BURST)));
    await waitFor(
      () => {
        socks.server.sampleKernelDrops();
        return stats.drops.source + stats.drops['kernel-overflow'] === 2 * BURST;
      },
      10_000,
      `every datagram of the bursts to be counted (source ${stats.drops.source}, kernel-overflow ${stats.drops['kernel-overflow']})`,
    );
    assert.equal(stats.drops['kernel-overflow'], 0);
    assert.equal(stats.drops.source, 2 * BURST);
  } finally {
    association.close();
    await socks.close();
  }
});
