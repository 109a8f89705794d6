// The handshake machine (src/server/handshake.ts) without sockets: every exchange split at every byte
// boundary, and in random pieces, gives the same steps as in one piece; malformed input gives the
// RFC's reply code or a close.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Handshake, type HandshakeStep } from '../../src/server/handshake.js';
import { greeting, request, userPass } from '../helpers/socks-bytes.js';

/** Feeds `pieces` in order, answering a login with `loginOk`; the steps taken (replies as bytes). */
function run(pieces: Buffer[], requireLogin: boolean, loginOk = true): { steps: string[]; rest: Buffer } {
  const hs = new Handshake();
  const steps: string[] = [];
  for (const piece of pieces) {
    hs.push(piece);
    for (;;) {
      const step: HandshakeStep = hs.next(requireLogin);
      if (step.kind === 'more') break;
      if (step.kind === 'method') steps.push(`method ${step.reply.toString('hex')}`);
      else if (step.kind === 'login') steps.push(`login ${step.username}:${step.password.toString()} -> ${hs.loginChecked(step.password.toString() === 'pw' && loginOk).toString('hex')}`);
      else if (step.kind === 'request') steps.push(`request ${step.request.command} ${step.request.destination.host}:${step.request.destination.port}`);
      else steps.push(`error ${step.reply ?? 'close'}`);
    }
  }
  return { steps, rest: hs.take() };
}

/** Every way of cutting `bytes` in two, plus one byte at a time. */
function splits(bytes: Buffer): Buffer[][] {
  const out: Buffer[][] = [[bytes], [...bytes].map((b) => Buffer.from([b]))];
  for (let i = 1; i < bytes.length; i++) out.push([bytes.subarray(0, i), bytes.subarray(i)]);
  return out;
}

const CASES = [
  {
    name: 'no authentication, CONNECT to an IPv4 address, data sent ahead',
    bytes: Buffer.concat([greeting(0), request(1, '127.0.0.1', 8080), Buffer.from('ahead')]),
    login: false,
    steps: ['method 0500', 'request 1 127.0.0.1:8080'],
    rest: 'ahead',
  },
  {
    name: 'username/password, then UDP ASSOCIATE to a domain',
    bytes: Buffer.concat([greeting(0, 2), userPass('alice', 'pw'), request(3, 'example.test', 53)]),
    login: true,
    steps: ['method 0502', 'login alice:pw -> 0100', 'request 3 example.test:53'],
    rest: '',
  },
  {
    name: 'a wrong password ends it after the status',
    bytes: Buffer.concat([greeting(2), userPass('alice', 'nope'), request(1, '::1', 1)]),
    login: true,
    steps: ['method 0502', 'login alice:nope -> 0101'],
    rest: Buffer.concat([request(1, '::1', 1)]).toString('latin1'),
  },
  {
    name: 'no acceptable method',
    bytes: Buffer.concat([greeting(0), request(1, '127.0.0.1', 1)]),
    login: true,
    steps: ['method 05ff'],
    rest: request(1, '127.0.0.1', 1).toString('latin1'),
  },
  {
    name: 'an unknown command gets 0x07',
    bytes: Buffer.concat([greeting(0), Buffer.from([5, 9, 0, 1, 127, 0, 0, 1, 0, 80])]),
    login: false,
    steps: ['method 0500', 'error 7'],
    rest: '',
  },
  {
    name: 'an unknown address type gets 0x08',
    bytes: Buffer.concat([greeting(0), Buffer.from([5, 1, 0, 9, 1, 2, 3])]),
    login: false,
    steps: ['method 0500', 'error 8'],
    rest: '',
  },
  {
    name: 'SOCKS4 is closed without a reply',
    bytes: Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0]),
    login: false,
    steps: ['error close'],
    rest: '',
  },
];

for (const c of CASES) {
  test(`handshake: ${c.name}, at every split`, () => {
    for (const pieces of splits(c.bytes)) {
      const { steps, rest } = run(pieces, c.login);
      assert.deepEqual(steps, c.steps, `split into ${pieces.map((p) => p.length).join('+')}`);
      if (c.steps.at(-1)?.startsWith('request')) assert.equal(rest.toString('latin1'), c.rest);
    }
  });
}

test('handshake: random pieces of a pipelined exchange give the same steps as one piece', () => {
  const bytes = Buffer.concat([greeting(1, 2, 0), userPass('bob', 'pw'), request(1, 'name.test', 443), Buffer.from('early data')]);
  const whole = run([bytes], true);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 12 }), (cuts) => {
      const at = [...new Set(cuts)].sort((a, b) => a - b);
      const pieces = [0, ...at].map((from, i) => bytes.subarray(from, at[i] ?? bytes.length));
      const got = run(pieces, true);
      assert.deepEqual(got.steps, whole.steps);
      assert.equal(got.rest.toString(), 'early data');
    }),
    { numRuns: 300, seed: 20261203 },
  );
});

test('handshake: before a login is checked, later bytes wait; the phase names where it is', () => {
  const hs = new Handshake();
  assert.equal(hs.phase, 'greeting');
  hs.push(Buffer.concat([greeting(2), userPass('u', 'pw'), request(1, '127.0.0.1', 9)]));
  assert.equal(hs.next(true).kind, 'method');
  assert.equal(hs.phase, 'auth');
  assert.equal(hs.next(true).kind, 'login');
  assert.equal(hs.next(true).kind, 'more', 'the request waits for the check');
  assert.deepEqual([...hs.loginChecked(true)], [1, 0]);
  assert.equal(hs.phase, 'request');
  const step = hs.next(true);
  assert.equal(step.kind, 'request');
  assert.equal(hs.phase, 'done');
  assert.equal(hs.next(true).kind, 'more');
});
