// UDP GSO in the native relay when the route cannot take it: a namespace whose loopback MTU (1300)
// is below the grouped datagrams' size makes the kernel refuse the GSO message (EINVAL); the helper
// must then send them one by one (fragmented as usual) and lose nothing. Both passes of `npm test`
// run it; on dgram there is no grouping and the same must hold.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { NetnsLab, requireNetns } from '../helpers/netns.js';

const PROBE = fileURLToPath(new URL('../helpers/gso-probe.js', import.meta.url));

test('relay socket: GSO refused by the route (MTU below the datagram) falls back to one by one, nothing lost', () => {
  requireNetns();
  const lab = new NetnsLab('gso');
  try {
    const ns = lab.add('mtu');
    lab.ip(ns, 'link', 'set', 'lo', 'mtu', '1300');
    const run = (size: number): Record<string, unknown> => JSON.parse(lab.exec(ns, process.execPath, [PROBE, 'run', String(size), '20']).trim()) as Record<string, unknown>;
    // 1400 + 3 bytes of header: a GSO segment over the route's MTU, so the kernel refuses the group.
    const big = run(1400);
    assert.equal(big.error, undefined, String(big.error));
    assert.deepEqual({ received: big.received, exact: big.exact, errors: big.errors }, { received: 20, exact: 20, errors: [] }, JSON.stringify(big));
    assert.equal(big.gsoDatagrams, 0, 'no GSO message was accepted at this size');
    // Under the MTU the same route takes the groups.
    const small = run(500);
    assert.deepEqual({ received: small.received, exact: small.exact, errors: small.errors }, { received: 20, exact: 20, errors: [] }, JSON.stringify(small));
    if (small.native === true) assert.ok(Number(small.gsoDatagrams) >= 4, `grouped under the MTU: ${JSON.stringify(small)}`);
    else assert.equal(small.gsoDatagrams, 0);
  } finally {
    void lab.close();
  }
});
