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

// The native helper hands datagrams over as views of its arena and reuses a view when a slot sees a
// length it saw just before: whatever the lengths, every byte must be the datagram's own.
test('payloads of changing lengths, one by one and in bursts, come back byte for byte', async () => {
  const socks = await startSocks({});
  const echo = await startUdpEcho('127.0.0.1');
  const association = await openAssociation(socks.port);
  try {
    const payload = (n: number, i: number): Buffer => Buffer.from(Array.from({ length: n }, (_, k) => (k * 7 + i * 13) & 0xff));
    const lengths = [1, 64, 64, 65, 1, 512, 64, 1400, 1400, 0, 63, 64];
    for (let i = 0; i < lengths.length; i++) {
      const sent = payload(lengths[i]!, i);
      await association.sendTo('127.0.0.1', echo.port, sent);
      const reply = unwrap((await association.udp.receive()).data);
      assert.deepEqual(reply.data, sent, `datagram ${i} (${lengths[i]} bytes)`);
    }
    // A burst: several datagrams arrive in one batch, in different arena slots.
    const burst = lengths.map((n, i) => payload(n, i + 100));
    for (const sent of burst) await association.sendTo('127.0.0.1', echo.port, sent);
    const got: string[] = [];
    for (let i = 0; i < burst.length; i++) got.push(unwrap((await association.udp.receive()).data).data.toString('hex'));
    assert.deepEqual(got.sort(), burst.map((b) => b.toString('hex')).sort());
  } finally {
    association.close();
    echo.close();
    await socks.close();
  }
});
