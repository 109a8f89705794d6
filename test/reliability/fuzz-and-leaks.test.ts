import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Peer, waitFor } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { addressBytes, greeting, request, userPass } from '../helpers/socks-bytes.js';
import { UserStore, hashPassword } from '../../src/server/users.js';

/** Live handles of this process by kind (sockets, servers, timers). */
function handles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

type Step = { kind: 'bytes'; data: Uint8Array } | { kind: 'pause' } | { kind: 'destroy' } | { kind: 'half-close' };

test('random and hostile clients: no crash, every session and handle released', async () => {
  const baseline = handles();
  const echo = await startEcho();
  const users = UserStore.fromEntries([['u', await hashPassword(Buffer.from('p'), 10)]]);
  const open = await startSocks({ handshakeTimeoutMs: 300, idleTimeoutMs: 500, bindTimeoutMs: 300, connectTimeoutMs: 500 });
  const guarded = await startSocks({ handshakeTimeoutMs: 300, idleTimeoutMs: 500, bindTimeoutMs: 300, users });

  // Pieces that get past a parser now and then, mixed with noise.
  const pieces = fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    fc.constantFrom(greeting(0), greeting(2), greeting(0, 2), Buffer.from([5, 0]), userPass('u', 'p'), userPass('u', 'x')),
    fc.tuple(fc.integer({ min: 0, max: 10 }), fc.constantFrom('127.0.0.1', '::1', 'localhost', '0.0.0.0')).map(([cmd, host]) =>
      Buffer.concat([Buffer.from([5, cmd, 0]), addressBytes(host, echo.port).subarray(0)]),
    ),
    fc.constant(request(1, '127.0.0.1', echo.port)),
    fc.constant(request(2, '127.0.0.1', 0)),
    fc.uint8Array({ minLength: 1, maxLength: 8 }).map((b) => Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from(b)])),
  );
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 6, arbitrary: pieces.map((data) => ({ kind: 'bytes' as const, data })) },
    { weight: 2, arbitrary: fc.constant({ kind: 'pause' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'destroy' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'half-close' as const }) },
  );
  const scripts = fc.sample(fc.tuple(fc.boolean(), fc.array(step, { minLength: 1, maxLength: 6 })), { numRuns: 400, seed: 20261125 });
  // Well-formed sessions abandoned at every stage, so each command's own resources are exercised.
  const bytes = (data: Buffer): Step => ({ kind: 'bytes', data });
  const pause: Step = { kind: 'pause' };
  for (const ending of [[], [pause], [{ kind: 'destroy' }], [{ kind: 'half-close' }]] as Step[][]) {
    scripts.push([false, [bytes(greeting(0)), bytes(request(2, '127.0.0.1', 0)), ...ending]]);
    scripts.push([false, [bytes(greeting(0)), bytes(request(1, '127.0.0.1', echo.port)), bytes(Buffer.from('data')), ...ending]]);
    scripts.push([true, [bytes(greeting(2)), bytes(userPass('u', 'p')), bytes(request(1, 'localhost', echo.port)), ...ending]]);
    scripts.push([true, [bytes(greeting(2)), bytes(userPass('u', 'p')), bytes(request(2, '0.0.0.0', 0)), ...ending]]);
  }

  const run = async ([useAuth, steps]: [boolean, Step[]]): Promise<void> => {
    const peer = await Peer.connect(useAuth ? guarded.port : open.port);
    for (const s of steps) {
      if (peer.ended || peer.isClosed) break;
      if (s.kind === 'bytes') peer.write(s.data);
      else if (s.kind === 'pause') await new Promise((resolve) => setTimeout(resolve, 5));
      else if (s.kind === 'half-close') peer.end();
      else peer.destroy();
      if (s.kind === 'destroy' || s.kind === 'half-close') break;
    }
    // Whatever it did, the server closes on it within its timeouts (handshake, bind, idle).
    await peer.closed(5000).catch(() => peer.destroy());
  };

  // Bounded by the count of scripts (and each by its peer's close wait), not by a clock.
  for (let i = 0; i < scripts.length; i += 50) await Promise.all(scripts.slice(i, i + 50).map(run));

  await waitFor(() => open.server.sessionCount === 0 && guarded.server.sessionCount === 0, 5000, 'every session to close');

  // The servers still serve after the storm.
  const peer = await Peer.connect(open.port);
  peer.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo.port), Buffer.from('alive')]));
  await peer.read(2 + 10);
  assert.equal((await peer.read(5)).toString(), 'alive');
  peer.destroy();

  await Promise.all([open.close(), guarded.close(), echo.close()]);
  await waitFor(
    () => {
      const now = handles();
      return ['TCPSocketWrap', 'TCPServerWrap', 'Timeout'].every((k) => (now[k] ?? 0) <= (baseline[k] ?? 0));
    },
    5000,
    `handles back to baseline ${JSON.stringify(baseline)} (now ${JSON.stringify(handles())})`,
  );
});
