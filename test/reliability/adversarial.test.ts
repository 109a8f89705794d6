import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Peer, waitFor } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { greeting, handshake, readReply, request } from '../helpers/socks-bytes.js';
import { UdpPeer, openAssociation, startUdpEcho, unwrap, wrap } from '../helpers/udp.js';

function handles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/** A normal client gets through, end to end. */
async function normalClientServed(port: number, echoPort: number): Promise<void> {
  const peer = await Peer.connect(port);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', echoPort));
  assert.equal((await readReply(peer)).code, 0);
  peer.write('served');
  assert.equal((await peer.read(6)).toString(), 'served');
  peer.destroy();
}

test('slow-loris, a connection flood, UDP floods and forged datagrams: a normal client is still served, nothing leaks', async () => {
  const baseline = handles();
  const echo = await startEcho();
  const udpEcho = await startUdpEcho();
  const socks = await startSocks({ maxClients: 60, handshakeTimeoutMs: 500, limits: { sessionsPerClient: 40 } });
  const fixed = await startSocks({ udp: { port: 0 } });
  // The flood gets its own capped server with the default handshake timeout: on a loaded machine,
  // accepting 150 connections can take longer than the 500 ms that ends the slow-loris clients.
  const capped = await startSocks({ maxClients: 60, limits: { sessionsPerClient: 40 } });
  try {
    // Slow-loris: 30 clients that dribble a handshake and never finish it.
    const loris = await Promise.all(Array.from({ length: 30 }, (_, i) => Peer.connect(socks.port, '127.0.0.1', `127.0.1.${i + 1}`)));
    const dribble = setInterval(() => {
      for (const peer of loris) if (!peer.isClosed && !peer.ended) peer.write(Buffer.from([5]));
    }, 100);
    await normalClientServed(socks.port, echo.port);
    for (const peer of loris) await peer.closed(15_000);
    clearInterval(dribble);

    // A flood past maxClients: the excess is closed at once; the cap is never passed.
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, capped.server.sessionCount)), 5);
    const flood = await Promise.all(Array.from({ length: 150 }, (_, i) => Peer.connect(capped.port, '127.0.0.1', `127.0.2.${(i % 250) + 1}`).catch(() => null)));
    await waitFor(() => capped.server.refusedCount > 0, 15_000, 'connections over the cap to be refused');
    clearInterval(watch);
    assert.ok(most <= 60, `at most 60 sessions at once, saw ${most}`);
    for (const peer of flood) peer?.destroy();
    await waitFor(() => capped.server.sessionCount === 0, 15_000, 'the flood to drain');
    await normalClientServed(capped.port, echo.port);

    // UDP floods from sources that have no association, at a relay port and at the fixed port,
    // and datagrams forged from another local port into a live association.
    for (const server of [socks, fixed]) {
      const victim = await openAssociation(server.port, { declare: 'port' });
      const attackers = await Promise.all(Array.from({ length: 4 }, (_, i) => UdpPeer.bind(i % 2 === 0 ? '127.0.0.1' : '127.0.3.1')));
      const before = server.server.udpStats.droppedTotal;
      const reachedBefore = udpEcho.received();
      for (let round = 1; round <= 100; round++) {
        for (const attacker of attackers) await attacker.send(wrap('127.0.0.1', udpEcho.port, Buffer.from('forged')), victim.reply.port, victim.reply.host);
        // Paced, so the kernel's receive buffer never overflows: every datagram must be seen and dropped by us.
        if (round % 10 === 0) await waitFor(() => server.server.udpStats.droppedTotal - before === round * 4, 15_000, `forged datagrams of round ${round} to be dropped`);
      }
      assert.equal(udpEcho.received(), reachedBefore, 'nothing forged reached the destination');
      await victim.sendTo('127.0.0.1', udpEcho.port, Buffer.from('victim ok'));
      assert.equal(unwrap((await victim.udp.receive()).data).data.toString(), 'victim ok');
      for (const attacker of attackers) {
        assert.equal(attacker.pending, 0, 'attackers got nothing back');
        attacker.close();
      }
      victim.close();
      await waitFor(() => server.server.udpStats.activeAssociations === 0, 15_000, 'the association to close');
    }
    // And a greeting flood from one address past its session cap still leaves others served.
    const same = await Promise.all(Array.from({ length: 45 }, () => Peer.connect(socks.port, '127.0.0.1', '127.0.0.9')));
    for (const peer of same) peer.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo.port)]));
    await waitFor(() => socks.server.stats.sessionsOverLimit >= 5, 15_000, 'the per-client cap to refuse the excess');
    await normalClientServed(socks.port, echo.port);
    for (const peer of same) peer.destroy();
    await waitFor(() => socks.server.sessionCount === 0, 15_000, 'everything to close');
  } finally {
    udpEcho.close();
    await Promise.all([socks.close(), fixed.close(), capped.close(), echo.close()]);
  }
  await waitFor(
    () => ['TCPSocketWrap', 'TCPServerWrap', 'UDPWrap', 'Timeout'].every((k) => (handles()[k] ?? 0) <= (baseline[k] ?? 0)),
    5000,
    `handles back to baseline ${JSON.stringify(baseline)} (now ${JSON.stringify(handles())})`,
  );
});
