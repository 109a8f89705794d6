import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startSocks } from '../helpers/servers.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

// The relay remembers the last destination a client sent to, so a steady stream skips parsing and
// lookups. These pin down that the memo never changes what happens: replies keep their real
// source, other destinations and fragments take the full path, and a reload is obeyed at once.
test('the last-destination memo: alternating destinations, fragments, and a reload that denies', async () => {
  const socks = await startSocks({});
  const a = await startUdpEcho('127.0.0.1');
  const b = await startUdpEcho('127.0.0.1');
  const association = await openAssociation(socks.port);
  try {
    const roundTrip = async (port: number, text: string, frag = 0): Promise<void> => {
      await association.sendTo('127.0.0.1', port, Buffer.from(text), frag);
      const reply = unwrap((await association.udp.receive()).data);
      assert.deepEqual([reply.host, reply.port, reply.data.toString()], ['127.0.0.1', port, text], 'the reply names its real source');
    };
    for (let i = 0; i < 5; i++) await roundTrip(a.port, `a${i}`);
    for (let i = 0; i < 6; i++) await roundTrip(i % 2 === 0 ? b.port : a.port, `alternate${i}`);
    // A one-datagram "sequence" (FRAG 0x81: first and last) is reassembled, not taken for the memo's header.
    await roundTrip(a.port, 'fragment', 0x81);
    await roundTrip(a.port, 'after the fragment');
    assert.equal(a.received() + b.received(), 13);

    const denied = socks.server.udpStats.drops.denied;
    socks.server.reload({ allowLoopbackTargets: true, rules: [{ action: 'deny', destinations: ['127.0.0.1/32'], ports: [String(a.port)] }] });
    await association.sendTo('127.0.0.1', a.port, Buffer.from('now denied'));
    await roundTrip(b.port, 'b still allowed');
    await association.sendTo('127.0.0.1', a.port, Buffer.from('still denied'));
    await roundTrip(b.port, 'b again');
    assert.equal(socks.server.udpStats.drops.denied, denied + 2, 'both datagrams to the denied destination were dropped');
    assert.equal(a.received(), 10, 'nothing more reached the denied destination');
  } finally {
    association.close();
    a.close();
    b.close();
    await socks.close();
  }
});
