import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { addressFromHost } from 'socksgate-client/protocol';
import { canonicalIpv6, ipv6FromBytes, ipv6ToBytes } from 'socksgate-client/protocol';

// ipaddr.js (the server's CIDR matcher uses it) is the independent reference for the codec's own IPv6 text.
test('IPv6 bytes to text is RFC 5952, as ipaddr.js writes it', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.array(fc.nat(7), { maxLength: 8 }), (bytes, zeroGroups) => {
      for (const g of zeroGroups) bytes[2 * g] = bytes[2 * g + 1] = 0;
      const text = ipv6FromBytes(bytes);
      assert.equal(text, ipaddr.fromByteArray([...bytes]).toString());
      assert.deepEqual([...ipv6ToBytes(text)], [...bytes]);
    }),
    { numRuns: 2000 },
  );
});

test('IPv6 text in every spelling parses to the bytes ipaddr.js reads', () => {
  fc.assert(
    // ipaddr.js reads "::a.b.c.d" as IPv4-mapped (::ffff:a.b.c.d); RFC 4291 §2.5.5.1 says zeros, as checked below.
    fc.property(fc.ipV6().filter((text) => !/^::[0-9.]+$/.test(text)), (text) => {
      assert.deepEqual([...ipv6ToBytes(text)], ipaddr.IPv6.parse(text).toByteArray());
      assert.equal(canonicalIpv6(text), ipaddr.IPv6.parse(text).toString());
    }),
    { numRuns: 2000 },
  );
  for (const [text, canonical] of [
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['::192.0.2.1', '::c000:201'],
    ['fe80::1%eth0', 'fe80::1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ] as const) assert.equal(canonicalIpv6(text), canonical, text);
  assert.deepEqual(addressFromHost('::FFFF:192.0.2.1', 80), { host: '192.0.2.1', port: 80, type: 'ipv4' });
  assert.throws(() => ipv6ToBytes('1::2::3'), TypeError);
});
