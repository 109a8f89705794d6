import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { addressBytes } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho } from '../helpers/udp.js';

// Datagrams built from loopback destinations only (this machine's rules: no traffic leaves it), then
// damaged: cut short, RSV set, ATYP replaced by a value that cannot turn the bytes into another IP
// address, FRAG set. Every datagram must end up either forwarded or dropped-and-counted, exactly once.
test('hostile datagrams: every one is forwarded or dropped and counted, nothing crashes', async () => {
  const dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'] });
  const echo = await startUdpEcho('127.0.0.1');
  const echo6 = await startUdpEcho('::1');
  const servers = [
    await startSocks({ dnsServers: [dns.server], udp: { fragments: 'drop' } }),
    await startSocks({ dnsServers: [dns.server], udp: { fragments: 'drop', port: 0 } }),
  ];
  const targets = [
    addressBytes('127.0.0.1', echo.port),
    addressBytes('::1', echo6.port),
    addressBytes('echo.test', echo.port),
    addressBytes('missing.test', echo.port),
    addressBytes('127.0.0.1', 0),
  ];
  const datagram = fc
    .record({
      target: fc.integer({ min: 0, max: targets.length - 1 }),
      payload: fc.uint8Array({ maxLength: 300 }),
      cut: fc.option(fc.nat(), { freq: 3 }),
      rsv: fc.option(fc.integer({ min: 1, max: 255 }), { freq: 6 }),
      atyp: fc.option(fc.constantFrom(0, 2, 3, 5, 0x7f, 0xff), { freq: 6 }),
      frag: fc.option(fc.integer({ min: 1, max: 255 }), { freq: 6 }),
    })
    .map(({ target, payload, cut, rsv, atyp, frag }) => {
      const bytes = Buffer.concat([Buffer.from([0, 0, 0]), targets[target]!, Buffer.from(payload)]);
      if (rsv !== null) bytes[1] = rsv;
      if (atyp !== null) bytes[3] = atyp;
      if (frag !== null) bytes[2] = frag;
      return cut === null ? bytes : bytes.subarray(0, cut % (bytes.length + 1));
    });
  const samples = fc.sample(datagram, { numRuns: 1500, seed: 7 });
  try {
    for (const socks of servers) {
      const stats = socks.server.udpStats;
      const a = await openAssociation(socks.port, { declare: 'port' });
      try {
        const before = { client: stats.clientDatagrams, settled: stats.forwardedDatagrams + stats.droppedTotal };
        for (let i = 0; i < samples.length; i++) {
          await a.udp.send(samples[i]!, a.reply.port, a.reply.host);
          // Pace the sender and drain echoes so no kernel buffer overflows (that loss would be UDP's, not ours).
          if (i % 50 === 49) {
            await waitFor(() => stats.clientDatagrams - before.client === i + 1, 3000, `datagram ${i} to arrive`);
            while (a.udp.pending > 0) await a.udp.receive();
          }
        }
        await waitFor(() => stats.clientDatagrams - before.client === samples.length, 5000, 'every datagram to arrive');
        await waitFor(() => stats.forwardedDatagrams + stats.droppedTotal - before.settled === samples.length, 5000, 'every datagram to be settled');
        assert.ok(stats.drops.malformed > 0 && stats.drops['fragment-disabled'] > 0 && stats.forwardedDatagrams > 0, JSON.stringify(stats.drops));
        // Still serving.
        await a.sendTo('127.0.0.1', echo.port, Buffer.from('after the storm'));
        let got = '';
        while (got !== 'after the storm') got = (await a.udp.receive()).data.subarray(10).toString();
      } finally {
        a.close();
      }
      await waitFor(() => stats.activeAssociations === 0, 3000, 'the association to close');
    }
  } finally {
    echo.close();
    echo6.close();
    await Promise.all([...servers.map((s) => s.close()), dns.close()]);
  }
});
