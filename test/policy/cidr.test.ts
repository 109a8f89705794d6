import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { CidrSet, dottedQuad } from '../../src/policy/cidr.js';

// The reference: every range and every address parsed by ipaddr.js and compared with its match().
function referenceContains(texts: readonly string[], ip: string): boolean {
  const ranges = texts.map((text): [ipaddr.IPv4 | ipaddr.IPv6, number] => {
    const [address, bits] = text.includes('/') ? ipaddr.parseCIDR(text) : [ipaddr.parse(text), -1];
    const prefix = bits < 0 ? (address.kind() === 'ipv4' ? 32 : 128) : bits;
    if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) return [(address as ipaddr.IPv6).toIPv4Address(), prefix - 96];
    return [address, prefix];
  });
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.process(ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip);
  } catch {
    return false;
  }
  return ranges.some((range) => range[0].kind() === address.kind() && address.match(range));
}

const octet = fc.integer({ min: 0, max: 255 });
const quad = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
// Addresses near a few bases, so that random ranges and addresses often share their first bits.
const nearQuad = fc.tuple(fc.constantFrom('10.0', '127.0', '192.168', '0.0', '255.255'), octet, octet).map(([a, c, d]) => `${a}.${c}.${d}`);
const hex16 = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
const ipv6 = fc.oneof(
  fc.array(hex16, { minLength: 8, maxLength: 8 }).map((h) => h.join(':')),
  fc.tuple(fc.constantFrom('2001:db8', 'fe80', ''), hex16).map(([a, b]) => `${a}::${b}`),
  fc.oneof(quad, nearQuad).map((q) => `::ffff:${q}`),
  fc.oneof(quad, nearQuad).map((q) => `::FFFF:${q}`),
  fc.constant('::1'),
  fc.constant('::'),
);
const range = fc.oneof(
  fc.tuple(fc.oneof(quad, nearQuad), fc.integer({ min: 0, max: 32 })).map(([q, p]) => `${q}/${p}`),
  fc.oneof(quad, nearQuad),
  fc.tuple(ipv6, fc.integer({ min: 0, max: 128 })).map(([a, p]) => `${a}/${p}`),
  ipv6,
);
// What an address check may be asked about: plain and unusual IPv4 forms, IPv6, zones and junk.
const address = fc.oneof(
  quad,
  nearQuad,
  ipv6,
  fc.tuple(fc.oneof(quad, nearQuad), fc.constantFrom('%eth0', '%1')).map(([q, z]) => q + z),
  fc.tuple(ipv6, fc.constantFrom('%eth0', '%1')).map(([a, z]) => a + z),
  fc.tuple(octet, octet, octet, octet).map((o) => o.map((n) => `0${n}`).join('.')),
  fc.tuple(octet, octet, octet, octet).map((o) => o.map((n) => `0x${n.toString(16)}`).join('.')),
  fc.tuple(octet, octet).map(([a, b]) => `${a}.${b}`),
  fc.integer({ min: 0, max: 0xffffffff }).map(String),
  fc.string({ unit: fc.constantFrom('0', '1', '2', '5', '9', '.', ':', 'a', 'f', 'x', '%', ' ', '/'), maxLength: 18 }),
);

describe('CidrSet', () => {
  test('decides exactly as ipaddr.js matching every address against every range', () => {
    fc.assert(
      fc.property(fc.array(range, { minLength: 1, maxLength: 6 }), fc.array(address, { minLength: 1, maxLength: 8 }), (texts, ips) => {
        const set = new CidrSet(texts);
        for (const ip of ips) assert.equal(set.contains(ip), referenceContains(texts, ip), `${ip} in ${texts.join(', ')}`);
      }),
      { numRuns: 3000 },
    );
  });

  test('the boundaries of IPv4 ranges, prefix 0 and 32, mapped ranges', () => {
    const set = new CidrSet(['10.1.2.0/23', '192.0.2.7', '::ffff:198.51.100.0/120']);
    for (const [ip, inside] of [
      ['10.1.1.255', false],
      ['10.1.2.0', true],
      ['10.1.3.255', true],
      ['10.1.4.0', false],
      ['192.0.2.7', true],
      ['192.0.2.8', false],
      ['198.51.100.200', true],
      ['::ffff:198.51.100.1', true],
      ['198.51.101.0', false],
      ['::ffff:10.1.2.9', true],
      ['010.1.2.0', false],
      ['not an address', false],
    ] as const) {
      assert.equal(set.contains(ip), inside, ip);
    }
    assert.equal(new CidrSet(['0.0.0.0/0']).contains('255.255.255.255'), true);
    assert.equal(new CidrSet(['0.0.0.0/0']).contains('::1'), false);
    assert.equal(new CidrSet(['255.255.255.255/32']).contains('255.255.255.255'), true);
    assert.equal(new CidrSet(['255.255.255.255/32']).contains('255.255.255.254'), false);
  });

  test('dottedQuad reads plain dotted decimal only', () => {
    assert.equal(dottedQuad('0.0.0.0'), 0);
    assert.equal(dottedQuad('255.255.255.255'), 0xffffffff);
    assert.equal(dottedQuad('127.0.0.1'), 0x7f000001);
    for (const text of ['', '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.', '256.0.0.1', '01.2.3.4', '1.2.3.00', '1.2.3.4 ', '0x1.2.3.4', '::1', '1.2.3.4%eth0']) {
      assert.equal(dottedQuad(text), -1, text);
    }
  });
});
