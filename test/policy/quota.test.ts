import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { localParts, quotaPeriod, type QuotaPeriodKind } from '../../src/policy/quota-period.js';
import { DOWN, QuotaLedger, UP, exhaustedBy, roomFor } from '../../src/policy/quota-ledger.js';
import { QuotaAccount, chunkFor, limitsFor, NO_QUOTAS, type QuotaSettings, type QuotaSource } from '../../src/policy/quota.js';

const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'Asia/Kolkata', 'Pacific/Chatham', 'America/Santiago', 'Asia/Tehran', 'America/Havana', 'Pacific/Apia'];
const KINDS: QuotaPeriodKind[] = ['day', 'week', 'month'];
const H = 3_600_000;

describe('quota periods', () => {
  test('fixed examples: month, week, day in UTC and across DST', () => {
    const month = quotaPeriod(Date.parse('2026-12-03T14:00:00Z'), 'month', 'UTC');
    assert.equal(new Date(month.start).toISOString(), '2026-12-01T00:00:00.000Z');
    assert.equal(new Date(month.end).toISOString(), '2027-01-01T00:00:00.000Z');
    assert.equal(month.key, 'month:2026-12-01:UTC');
    // February of a leap year and of a common year.
    assert.equal(quotaPeriod(Date.parse('2024-02-29T23:59:59Z'), 'month', 'UTC').end - Date.parse('2024-02-01T00:00:00Z'), 29 * 24 * H);
    assert.equal(quotaPeriod(Date.parse('2026-02-10T00:00:00Z'), 'month', 'UTC').end - Date.parse('2026-02-01T00:00:00Z'), 28 * 24 * H);
    // 2026-12-03 is a Thursday: the week began on Monday 2026-11-30.
    const week = quotaPeriod(Date.parse('2026-12-03T14:00:00Z'), 'week', 'UTC');
    assert.equal(new Date(week.start).toISOString(), '2026-11-30T00:00:00.000Z');
    assert.equal(week.end - week.start, 7 * 24 * H);
    // Berlin: the day of the spring change has 23 hours, of the autumn change 25.
    const spring = quotaPeriod(Date.parse('2026-03-29T12:00:00Z'), 'day', 'Europe/Berlin');
    assert.equal(new Date(spring.start).toISOString(), '2026-03-28T23:00:00.000Z');
    assert.equal(spring.end - spring.start, 23 * H);
    const autumn = quotaPeriod(Date.parse('2026-10-25T12:00:00Z'), 'day', 'Europe/Berlin');
    assert.equal(autumn.end - autumn.start, 25 * H);
    // Just before local midnight in New York it is still the old month there, the new one in UTC.
    const ny = quotaPeriod(Date.parse('2026-12-01T03:00:00Z'), 'month', 'America/New_York');
    assert.equal(new Date(ny.start).toISOString(), '2026-11-01T04:00:00.000Z');
    assert.equal(new Date(ny.end).toISOString(), '2026-12-01T05:00:00.000Z');
    // Santiago skips midnight at its spring change (2026-09-06 00:00 -> 01:00): the day starts at 01:00.
    const gap = quotaPeriod(Date.parse('2026-09-06T12:00:00Z'), 'day', 'America/Santiago');
    assert.deepEqual(localParts(gap.start, 'America/Santiago'), { year: 2026, month: 9, day: 6, hour: 1, minute: 0, second: 0 });
    assert.equal(gap.end - gap.start, 23 * H);
  });

  test('any instant: start <= t < end, start and end are local midnights (or where a gap ends), periods tile', () => {
    fc.assert(
      fc.property(fc.integer({ min: Date.parse('1990-01-01'), max: Date.parse('2060-01-01') }), fc.constantFrom(...ZONES), fc.constantFrom(...KINDS), (t, zone, kind) => {
        const p = quotaPeriod(t, kind, zone);
        assert.ok(p.start <= t && t < p.end, `${new Date(t).toISOString()} in [${new Date(p.start).toISOString()}, ${new Date(p.end).toISOString()})`);
        const s = localParts(p.start, zone);
        const before = localParts(p.start - 1000, zone);
        // The start is the first second of its local date.
        assert.notEqual(`${s.year}-${s.month}-${s.day}`, `${before.year}-${before.month}-${before.day}`);
        assert.ok(s.hour <= 1, `starts at ${s.hour}:${s.minute}`);
        if (kind === 'month') assert.equal(s.day, 1);
        if (kind === 'week') assert.equal(new Date(Date.UTC(s.year, s.month - 1, s.day)).getUTCDay(), 1);
        const days = (p.end - p.start) / (24 * H);
        const expect = kind === 'day' ? [0.9, 1.1] : kind === 'week' ? [6.9, 7.1] : [27.9, 31.1];
        assert.ok(days >= expect[0]! && days <= expect[1]!, `${kind} of ${days} days`);
        // The next period starts where this one ends; the same period from any of its instants.
        assert.equal(quotaPeriod(p.end, kind, zone).start, p.end);
        assert.equal(quotaPeriod(p.end - 1, kind, zone).key, p.key);
        assert.equal(quotaPeriod(p.start, kind, zone).key, p.key);
      }),
      { numRuns: 400 },
    );
  });
});

describe('quota ledger', () => {
  const period = quotaPeriod(Date.parse('2026-12-03T00:00:00Z'), 'month', 'UTC');

  test('room and exhaustion per quota', () => {
    const limits = { total: 100, upload: 30, download: 0 };
    assert.equal(roomFor(limits, UP, 10, 20), 20);
    assert.equal(roomFor(limits, DOWN, 10, 20), 70);
    assert.equal(roomFor({ total: 0, upload: 0, download: 0 }, UP, 5, 5), Number.POSITIVE_INFINITY);
    assert.equal(exhaustedBy(limits, UP, { up: 30, down: 0 }), 'upload');
    assert.equal(exhaustedBy(limits, DOWN, { up: 30, down: 70 }), 'total');
    assert.equal(exhaustedBy(limits, DOWN, { up: 30, down: 69 }), null);
  });

  test('takes never pass the quota (unless forced); give-backs and usage per period', () => {
    const ledger = new QuotaLedger(() => Date.parse('2026-12-03T00:00:00Z'));
    const limits = { total: 1000, upload: 0, download: 0 };
    assert.deepEqual(ledger.take('alice', period, limits, UP, 600, false), { granted: 600, up: 600, down: 0 });
    assert.deepEqual(ledger.take('alice', period, limits, DOWN, 600, false), { granted: 400, up: 600, down: 400 });
    assert.deepEqual(ledger.take('alice', period, limits, DOWN, 1, false), { granted: 0, up: 600, down: 400 });
    assert.deepEqual(ledger.take('alice', period, limits, DOWN, 50, true), { granted: 50, up: 600, down: 450 });
    ledger.giveBack('alice', period, UP, 100);
    assert.deepEqual(ledger.usage(period), [{ user: 'alice', up: 500, down: 450 }]);
    const next = quotaPeriod(period.end, 'month', 'UTC');
    assert.deepEqual(ledger.usage(next), []);
  });
});

describe('quota settings', () => {
  const settings: QuotaSettings = { ...NO_QUOTAS, total: 10_000_000, users: { alice: { total: 50_000 }, bob: { total: 0, download: 2_000_000 } } };
  test('per-user quotas replace the defaults field by field; chunks at most 1/64 of the smallest', () => {
    assert.deepEqual(limitsFor(settings, 'carol'), { total: 10_000_000, upload: 0, download: 0 });
    assert.deepEqual(limitsFor(settings, 'alice'), { total: 50_000, upload: 0, download: 0 });
    assert.deepEqual(limitsFor(settings, 'bob'), { total: 0, upload: 0, download: 2_000_000 });
    assert.equal(limitsFor(NO_QUOTAS, 'carol'), null);
    assert.equal(chunkFor(settings, limitsFor(settings, 'alice')!), Math.floor(50_000 / 64));
    assert.equal(chunkFor(settings, limitsFor(settings, 'carol')!), Math.floor(10_000_000 / 64));
    assert.equal(chunkFor({ ...settings, total: 1e12 }, { total: 1e12, upload: 0, download: 0 }), 1024 * 1024);
  });
});

describe('quota account', () => {
  const period = quotaPeriod(Date.parse('2026-12-03T00:00:00Z'), 'month', 'UTC');
  function ledgerSource(ledger: QuotaLedger, up = { value: true }): QuotaSource {
    return {
      get up() {
        return up.value;
      },
      take: (user, p, limits, direction, want, force) => (up.value ? Promise.resolve(ledger.take(user, p, limits, direction, want, force)) : Promise.reject(new Error('down'))),
      giveBack: (user, p, direction, bytes) => ledger.giveBack(user, p, direction, bytes),
      usage: (p) => Promise.resolve(ledger.usage(p)),
    };
  }

  test('spends chunk by chunk, stops exactly at the quota, refuses after, gives back on close', async () => {
    const ledger = new QuotaLedger(() => period.start);
    const settings: QuotaSettings = { ...NO_QUOTAS, total: 64 * 100 };
    const account = new QuotaAccount('alice', limitsFor(settings, 'alice')!, period, settings, ledgerSource(ledger));
    await account.ready();
    assert.equal(account.refusal(), null);
    let relayed = 0;
    for (let i = 0; i < 1000; i++) {
      const got = account.take(UP, 70);
      relayed += got;
      if (got < 70) {
        const next = await new Promise<'wait' | 'end'>((resolve) => {
          const how = account.short(UP, () => resolve('wait'));
          if (how === 'end') resolve('end');
        });
        if (next === 'end') break;
      }
    }
    assert.equal(relayed, 6400);
    assert.equal(account.exhausted, 'total');
    const refusal = account.refusal();
    assert.equal(refusal?.quota, 'total');
    assert.equal(refusal?.periodStart, '2026-12-01T00:00:00.000Z');
    account.close();
    // Nothing of the download direction was used: its chunk went back.
    assert.deepEqual(ledger.usage(period), [{ user: 'alice', up: 6400, down: 0 }]);
  });

  test('while the store is down, bytes pass and are owed; they are written when it answers', async () => {
    const ledger = new QuotaLedger(() => period.start);
    const up = { value: false };
    const settings: QuotaSettings = { ...NO_QUOTAS, total: 1_000_000 };
    const account = new QuotaAccount('bob', limitsFor(settings, 'bob')!, period, settings, ledgerSource(ledger, up));
    await account.ready();
    assert.equal(account.take(DOWN, 5000), 5000);
    assert.deepEqual(ledger.usage(period), []);
    up.value = true;
    // The next spend finds nothing on hand and asks: first the owed bytes (forced), then a chunk.
    assert.equal(account.take(DOWN, 1), 0);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    account.close();
    assert.deepEqual(ledger.usage(period), [{ user: 'bob', up: 0, down: 5000 }]);
  });

  test('a session across the end of a period: the next take starts the new period, what the old one held goes back', async () => {
    const old = quotaPeriod(Date.parse('2020-03-10T00:00:00Z'), 'day', 'UTC');
    const ledger = new QuotaLedger();
    const settings: QuotaSettings = { ...NO_QUOTAS, period: 'day', total: 64 * 1000 };
    const account = new QuotaAccount('carol', limitsFor(settings, 'carol')!, old, settings, ledgerSource(ledger));
    // Bytes taken for the old day (as if before midnight), then spent in part.
    ledger.take('carol', old, account.limits, UP, 0, false);
    assert.equal(account.take(UP, 10), 0);
    await new Promise((resolve) => setImmediate(resolve));
    assert.notEqual(account.period.key, old.key);
    assert.equal(account.period.key, quotaPeriod(Date.now(), 'day', 'UTC').key);
    assert.equal(account.take(UP, 10), 10);
    account.close();
    assert.deepEqual(ledger.usage(account.period), [{ user: 'carol', up: 10, down: 0 }]);
  });
});
