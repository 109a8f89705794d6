import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { encodeUotFrame, parseUotFrame, type UotFrame } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import type { SocksAddress } from 'socksgate-client/protocol';

// The worked examples of docs/udp-over-tcp.md, as hev-socks5 puts them on the wire.
const EXAMPLES: Array<[SocksAddress, string]> = [
  [{ host: '1.2.3.4', port: 53, type: 'ipv4' }, '00050a01010203040035' + '68656c6c6f'],
  [{ host: '2001:db8::1', port: 53, type: 'ipv6' }, '0005160420010db80000000000000000000000010035' + '68656c6c6f'],
  [{ host: 'example.com', port: 53, type: 'domain' }, '000512030b6578616d706c652e636f6d0035' + '68656c6c6f'],
];

test('frames match the documented hev-socks5 layout byte for byte', () => {
  for (const [address, hex] of EXAMPLES) {
    assert.equal(encodeUotFrame(address, Buffer.from('hello')).toString('hex'), hex);
    assert.deepEqual(parseUotFrame(Buffer.from(hex, 'hex')), { status: 'ok', value: { address, payload: Buffer.from('hello') }, size: hex.length / 2 });
  }
});

test('random frames survive random TCP segmentation exactly', () => {
  const address: fc.Arbitrary<SocksAddress> = fc.oneof(
    fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 1, max: 65535 })).map(([b, port]) => ({ host: [...b].join('.'), port, type: 'ipv4' as const })),
    fc.tuple(fc.stringMatching(/^[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}$/), fc.integer({ min: 1, max: 65535 })).map(([host, port]) => ({ host, port, type: 'domain' as const })),
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(address, fc.uint8Array({ maxLength: 3000 })), { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (frames, cuts) => {
      const stream = Buffer.concat(frames.map(([a, p]) => encodeUotFrame(a, p)));
      const reader = new ByteReader();
      const got: UotFrame[] = [];
      let last = 0;
      for (const point of [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((x, y) => x - y).concat(stream.length)) {
        reader.push(stream.subarray(last, point));
        last = point;
        for (;;) {
          const frame = reader.read(parseUotFrame);
          if (frame.status === 'more') break;
          assert.equal(frame.status, 'ok');
          if (frame.status === 'ok') got.push({ address: frame.value.address, payload: Buffer.from(frame.value.payload) });
        }
      }
      assert.equal(got.length, frames.length);
      got.forEach((frame, i) => {
        assert.deepEqual(frame.address, frames[i]![0]);
        assert.ok(frame.payload.equals(Buffer.from(frames[i]![1])));
      });
      assert.equal(reader.length, 0);
    }),
    { numRuns: 300 },
  );
});

test('a header length that does not fit its address is an error, not a desync', () => {
  for (const hex of ['0001040101020304003541', '00010b01010203040035ff41', '0001090301610035']) {
    const result = parseUotFrame(Buffer.from(hex, 'hex'));
    assert.equal(result.status, 'error', hex);
  }
  assert.equal(parseUotFrame(Buffer.from('00050a010102', 'hex')).status, 'more');
});
