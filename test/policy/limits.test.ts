import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AuthLockout } from '../../src/policy/lockout.js';
import { LimitHost } from '../../src/cluster/limit-store.js';
import { LeasedBucket, RateBuckets, RateTable, TokenBucket, takeDatagramFromAll } from '../../src/policy/limits.js';

describe('token buckets and rate tables', () => {
  test('a refused datagram takes nothing from any bucket', () => {
    let now = 0;
    const packets = new TokenBucket(10, 10, () => now);
    assert.equal(packets.take(10), true);
    assert.equal(packets.take(1), false);
    now = 100;
    assert.equal(packets.take(1), true, 'one token back after 100 ms at 10/s');
    const client = new RateBuckets({ udpPacketsPerSecond: 100, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 });
    const user = new RateBuckets({ udpPacketsPerSecond: 1, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 });
    assert.equal(takeDatagramFromAll([client, user], 10), true);
    for (let i = 0; i < 50; i++) assert.equal(takeDatagramFromAll([client, user], 10), false);
    // The client's bucket was not charged for the 50 refusals.
    const alone = Array.from({ length: 99 }, () => client.takeDatagram(10)).filter(Boolean).length;
    assert.ok(alone >= 98, `client bucket still had ${alone} of 99`);
  });

  test('rates below one per second still let a datagram through now and then', () => {
    const slow = new RateBuckets({ udpPacketsPerSecond: 0.5, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 });
    assert.equal(slow.takeDatagram(1), true);
  });

  test('a reload keeps the buckets (and their emptiness); it grants no fresh burst', () => {
    const table = new RateTable({ udpPacketsPerSecond: 5, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 });
    const buckets = table.acquire('127.0.0.2');
    for (let i = 0; i < 5; i++) assert.equal(buckets.takeDatagram(1), true);
    table.update({ udpPacketsPerSecond: 5, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 });
    assert.equal(table.acquire('127.0.0.2'), buckets);
    assert.equal(buckets.takeDatagram(1), false);
  });
});

describe('leased buckets', () => {
  test('a steady flow asks the store once per chunk it uses, not once per datagram', async () => {
    // The primary's fleet bucket (what `limits.store: local` leases from), on a clock the test moves.
    let now = 1_000_000;
    const host = new LimitHost(() => now);
    let requests = 0;
    const source = {
      up: true,
      lease: (rate: number, burst: number, want: number) => {
        requests++;
        return Promise.resolve(host.lease('user udpPackets alice', rate, burst, want));
      },
      giveBack: (_rate: number, _burst: number, tokens: number) => host.giveBack('user udpPackets alice', tokens),
    };
    try {
      // 10,000 a second: chunks of 1,000. The flow uses 5,000 a second for 4 s, a datagram every 0.2 ms.
      const bucket = new LeasedBucket(10_000, 10_000, source, () => now);
      await Promise.resolve();
      let passed = 0;
      for (let i = 0; i < 20_000; i++) {
        now += 0.2;
        if (bucket.take(1)) passed++;
        if (i % 100 === 0) await Promise.resolve();
      }
      // Under the rate: nothing refused beyond the first lease's wait; 20 chunks used, about one request each.
      assert.ok(passed >= 19_900, `passed ${passed} of 20,000`);
      assert.ok(requests >= 18 && requests <= 25, `${requests} lease requests for 20 chunks`);
      bucket.close();
    } finally {
      host.close();
    }
  });
});

describe('login lockout', () => {
  test('parallel guesses count at once; a right password neither passes nor lifts a block', () => {
    const lockout = new AuthLockout({ slowAfter: 3, blockAfter: 5, blockMs: 60_000, windowMs: 60_000 });
    // Five checks start before any finishes: each is counted as it starts.
    const blocked = Array.from({ length: 5 }, () => lockout.fail('10.0.0.1'));
    assert.deepEqual(blocked, [false, false, false, false, true]);
    assert.equal(lockout.isBlocked('10.0.0.1'), true);
    lockout.succeed('10.0.0.1');
    assert.equal(lockout.isBlocked('10.0.0.1'), true, 'still blocked after a right password');
    // A user who mistypes once and then logs in is not slowed.
    lockout.fail('10.0.0.2');
    lockout.fail('10.0.0.2');
    lockout.succeed('10.0.0.2');
    assert.equal(lockout.delayFor('10.0.0.2'), 0);
  });
});
