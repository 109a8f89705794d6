import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { addressSize, parseAddress, writeAddress, type SocksAddress } from 'socksgate-client/protocol';
import { encodeAuthStatus, encodeCredentials, parseAuthStatus, parseCredentials } from 'socksgate-client/protocol';
import { Command, Reply } from 'socksgate-client/protocol';
import { encodeGreeting, encodeMethodSelection, parseGreeting, parseMethodSelection } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import { encodeReply, encodeRequest, parseReply, parseRequest } from 'socksgate-client/protocol';
import { encodeUdpDatagram, parseUdpHeader } from 'socksgate-client/protocol';
import type { ParseResult } from 'socksgate-client/protocol';

// Reference encoding written from RFC 1928 §4/§5, sharing nothing with src/protocol.
function refAddress(a: SocksAddress): Buffer {
  const port = [a.port >> 8, a.port & 0xff];
  if (a.type === 'ipv4') return Buffer.from([1, ...a.host.split('.').map(Number), ...port]);
  if (a.type === 'ipv6') {
    const url = new URL(`http://[${a.host}]/`).hostname.slice(1, -1);
    assert.equal(url, a.host, 'test addresses are in canonical form');
    const [head, tail = ''] = a.host.includes('::') ? a.host.split('::') : [a.host, undefined];
    const parse = (p: string | undefined): number[] => (!p ? [] : p.split(':').map((g) => parseInt(g, 16)));
    const h = parse(head);
    const t = parse(tail);
    const groups = a.host.includes('::') ? [...h, ...new Array(8 - h.length - t.length).fill(0), ...t] : h;
    return Buffer.from([4, ...groups.flatMap((g) => [g >> 8, g & 0xff]), ...port]);
  }
  return Buffer.concat([Buffer.from([3, a.host.length]), Buffer.from(a.host, 'latin1'), Buffer.from(port)]);
}

const ipv6Text = (bytes: number[]): string => {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
};

const arbPort = fc.integer({ min: 0, max: 65535 });
const arbAddress: fc.Arbitrary<SocksAddress> = fc.oneof(
  fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), arbPort).map(([b, port]) => ({ host: [...b].join('.'), port, type: 'ipv4' as const })),
  fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), arbPort).map(([b, port]) => ({ host: ipv6Text([...b]), port, type: 'ipv6' as const })),
  fc
    .tuple(fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.'), minLength: 1, maxLength: 255 }), arbPort)
    .map(([host, port]) => ({ host, port, type: 'domain' as const })),
);

/** Feeds `bytes` to a ByteReader in the given pieces and runs the parsers in order, as a session does. */
function parseInPieces(bytes: Buffer, cuts: number[], parsers: Array<(b: Buffer) => ParseResult<unknown>>): { values: unknown[]; rest: Buffer } {
  const reader = new ByteReader();
  const values: unknown[] = [];
  let step = 0;
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let last = 0;
  for (const point of [...points, bytes.length]) {
    reader.push(bytes.subarray(last, point));
    last = point;
    while (step < parsers.length) {
      const result = reader.read(parsers[step]!);
      if (result.status === 'error') throw result.error;
      if (result.status === 'more') break;
      values.push(result.value);
      step++;
    }
  }
  return { values, rest: reader.take() };
}

describe('address codec', () => {
  test('writeAddress matches the reference bytes and parseAddress reads them back', () => {
    fc.assert(
      fc.property(arbAddress, (address) => {
        const expected = refAddress(address);
        const buf = Buffer.alloc(addressSize(address));
        assert.equal(writeAddress(buf, 0, address), expected.length);
        assert.deepEqual(buf, expected);
        const parsed = parseAddress(expected, 0);
        assert.equal(parsed.status, 'ok');
        if (parsed.status === 'ok') {
          assert.deepEqual(parsed.value, address);
          assert.equal(parsed.size, expected.length);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('every proper prefix of an address needs more bytes', () => {
    fc.assert(
      fc.property(arbAddress, (address) => {
        const bytes = refAddress(address);
        for (let i = 0; i < bytes.length; i++) assert.equal(parseAddress(bytes.subarray(0, i), 0).status, 'more');
      }),
      { numRuns: 300 },
    );
  });

  test('errors carry the RFC 1928 reply code', () => {
    const badType = parseAddress(Buffer.from([0x02, 1, 2, 3, 4, 0, 80]), 0);
    assert.equal(badType.status, 'error');
    if (badType.status === 'error') assert.equal(badType.error.reply, Reply.ADDRESS_TYPE_NOT_SUPPORTED);
    for (const name of ['localhost\0', '127.0.0.1\0.example.org', 'a b', 'a%b', 'ex\u00e4mple']) {
      const bytes = Buffer.from(name, 'latin1');
      const result = parseAddress(Buffer.concat([Buffer.from([0x03, bytes.length]), bytes, Buffer.from([0, 80])]), 0);
      assert.equal(result.status, 'error', JSON.stringify(name));
      if (result.status === 'error') assert.deepEqual([result.error.code, result.error.reply], ['ERR_DOMAIN_CHARS', Reply.HOST_UNREACHABLE]);
    }
    const emptyDomain = parseAddress(Buffer.from([0x03, 0, 0, 80]), 0);
    assert.equal(emptyDomain.status, 'error');
    if (emptyDomain.status === 'error') assert.equal(emptyDomain.error.reply, Reply.HOST_UNREACHABLE);
  });

  test('encoding refuses domains it cannot carry', () => {
    const buf = Buffer.alloc(600);
    assert.throws(() => writeAddress(buf, 0, { host: 'x'.repeat(256), port: 1, type: 'domain' }), { code: 'ERR_DOMAIN_LENGTH' });
    assert.throws(() => writeAddress(buf, 0, { host: 'bücher.de\u20ac', port: 1, type: 'domain' }), { code: 'ERR_DOMAIN_CHARS' });
  });
});

describe('handshake messages', () => {
  const arbMethods = fc.uint8Array({ minLength: 1, maxLength: 255 }).map((m) => [...m]);
  const arbCredential = fc.uint8Array({ minLength: 1, maxLength: 255 });
  const arbUser = fc.string({ minLength: 1, maxLength: 60, unit: 'grapheme-ascii' });

  test('greeting, credentials, request and early data survive any split into pieces', () => {
    fc.assert(
      fc.property(
        arbMethods,
        arbUser,
        arbCredential,
        fc.constantFrom(Command.CONNECT, Command.BIND, Command.UDP_ASSOCIATE),
        arbAddress,
        fc.uint8Array({ maxLength: 64 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (methods, user, pass, command, destination, early, cuts) => {
          const u = Buffer.from(user);
          const bytes = Buffer.concat([
            Buffer.from([5, methods.length, ...methods]),
            Buffer.from([1, u.length]), u, Buffer.from([pass.length]), Buffer.from(pass),
            Buffer.from([5, command, 0]), refAddress(destination),
            Buffer.from(early),
          ]);
          const { values, rest } = parseInPieces(bytes, cuts, [parseGreeting, parseCredentials, parseRequest]);
          assert.deepEqual(values[0], { methods });
          assert.deepEqual(values[1], { username: user, password: Buffer.from(pass) });
          assert.deepEqual(values[2], { command, destination });
          assert.deepEqual(rest, Buffer.from(early));
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('a pipelined handshake split at every single byte boundary', () => {
    const bytes = Buffer.concat([
      Buffer.from([5, 2, 0, 2]),
      Buffer.from([1, 5]), Buffer.from('alice'), Buffer.from([3]), Buffer.from('pw!'),
      Buffer.from([5, 1, 0, 3, 9]), Buffer.from('localhost'), Buffer.from([0x1f, 0x90]),
      Buffer.from('GET / HTTP/1.0\r\n\r\n'),
    ]);
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b += 3) {
        const { values, rest } = parseInPieces(bytes, [a, b], [parseGreeting, parseCredentials, parseRequest]);
        assert.equal(values.length, 3);
        assert.deepEqual(values[2], { command: 1, destination: { host: 'localhost', port: 8080, type: 'domain' } });
        assert.equal(rest.toString(), 'GET / HTTP/1.0\r\n\r\n');
      }
    }
  });

  test('encoders produce the reference bytes', () => {
    fc.assert(
      fc.property(arbMethods, arbAddress, fc.integer({ min: 0, max: 8 }), (methods, address, code) => {
        assert.deepEqual(encodeGreeting(methods), Buffer.from([5, methods.length, ...methods]));
        assert.deepEqual(encodeRequest(Command.CONNECT, address), Buffer.concat([Buffer.from([5, 1, 0]), refAddress(address)]));
        const reply = encodeReply(code as 0, address);
        assert.deepEqual(reply, Buffer.concat([Buffer.from([5, code, 0]), refAddress(address)]));
        const parsed = parseReply(reply);
        assert.equal(parsed.status, 'ok');
        if (parsed.status === 'ok') assert.deepEqual(parsed.value, { reply: code, bound: address });
      }),
      { numRuns: 500 },
    );
    assert.deepEqual(encodeMethodSelection(2), Buffer.from([5, 2]));
    assert.deepEqual(encodeCredentials('al', 'pw'), Buffer.from([1, 2, 0x61, 0x6c, 2, 0x70, 0x77]));
    assert.deepEqual(encodeAuthStatus(false), Buffer.from([1, 1]));
    assert.deepEqual(parseAuthStatus(Buffer.from([1, 0])), { status: 'ok', value: true, size: 2 });
    assert.deepEqual(parseMethodSelection(Buffer.from([5, 0xff])), { status: 'ok', value: 0xff, size: 2 });
    assert.throws(() => encodeCredentials('', 'x'), { code: 'ERR_CREDENTIALS_LENGTH' });
  });

  test('protocol errors name the reply code to send', () => {
    const cases: Array<[Buffer, (b: Buffer) => ParseResult<unknown>, string, number | null]> = [
      [Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0]), parseGreeting, 'ERR_VERSION', null],
      [Buffer.from([5, 9, 0, 1, 127, 0, 0, 1, 0, 80]), parseRequest, 'ERR_COMMAND', Reply.COMMAND_NOT_SUPPORTED],
      [Buffer.from([5, 1, 0, 9, 127, 0, 0, 1, 0, 80]), parseRequest, 'ERR_ADDRESS_TYPE', Reply.ADDRESS_TYPE_NOT_SUPPORTED],
      [Buffer.from([5, 1, 0, 3, 0, 0, 80]), parseRequest, 'ERR_EMPTY_DOMAIN', Reply.HOST_UNREACHABLE],
      [Buffer.from([4, 1, 0, 1, 127, 0, 0, 1, 0, 80]), parseRequest, 'ERR_VERSION', Reply.GENERAL_FAILURE],
      [Buffer.from([2, 1, 0x61, 1, 0x62]), parseCredentials, 'ERR_AUTH_VERSION', null],
    ];
    for (const [bytes, parser, code, reply] of cases) {
      const result = parser(bytes);
      assert.equal(result.status, 'error', code);
      if (result.status === 'error') {
        assert.equal(result.error.code, code);
        assert.equal(result.error.reply, reply);
      }
    }
    // Zero methods is a valid greeting: the server answers 0xFF.
    assert.deepEqual(parseGreeting(Buffer.from([5, 0])), { status: 'ok', value: { methods: [] }, size: 2 });
  });

  test('random garbage never throws from any parser', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const buf = Buffer.from(bytes);
        for (const parser of [parseGreeting, parseCredentials, parseRequest, parseReply, parseUdpHeader, parseMethodSelection, parseAuthStatus]) {
          const result = parser(buf);
          assert.ok(['ok', 'more', 'error'].includes(result.status));
          if (result.status === 'ok') assert.ok(result.size <= buf.length);
        }
      }),
      { numRuns: 5000 },
    );
  });
});

describe('UDP datagram header', () => {
  test('round trip with the reference layout, DATA untouched', () => {
    fc.assert(
      fc.property(arbAddress, fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 2000 }), (address, frag, payload) => {
        const datagram = encodeUdpDatagram(address, payload, frag);
        assert.deepEqual(datagram, Buffer.concat([Buffer.from([0, 0, frag]), refAddress(address), Buffer.from(payload)]));
        const header = parseUdpHeader(datagram);
        assert.equal(header.status, 'ok');
        if (header.status === 'ok') {
          assert.deepEqual(header.value, { fragment: frag, address });
          assert.deepEqual(datagram.subarray(header.size), Buffer.from(payload));
        }
      }),
      { numRuns: 1000 },
    );
  });

  test('a datagram cut inside its header is malformed, not incomplete', () => {
    const whole = encodeUdpDatagram({ host: 'example.test', port: 53, type: 'domain' }, Buffer.from('q'));
    for (let i = 0; i < whole.length - 1; i++) {
      const result = parseUdpHeader(whole.subarray(0, i));
      assert.equal(result.status, 'error', `cut at ${i}`);
    }
  });
});
