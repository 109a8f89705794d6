import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AdminServer } from '../../src/observe/admin.js';
import { STATUS_PAGE } from '../../src/observe/status-page.js';
import { formatBytes, usageReport, usageTable, type UsageReport } from '../../src/observe/usage.js';
import { NO_QUOTAS } from '../../src/policy/quota.js';
import { startSocks } from '../helpers/servers.js';

describe('quota usage: report, table, endpoint', () => {
  const now = Date.parse('2026-12-03T14:00:00Z');
  const settings = { ...NO_QUOTAS, total: 1_000_000, users: { alice: { total: 0, download: 500 }, carol: {} } };

  test('every user with figures and every user named, sorted; remaining per quota (null where none)', async () => {
    const report = await usageReport(settings, () => Promise.resolve([{ user: 'bob', up: 400_000, down: 700_000 }, { user: 'alice', up: 10, down: 500 }]), now);
    assert.deepEqual(report.period, { kind: 'month', timeZone: 'UTC', start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' });
    assert.deepEqual(
      report.users.map((u) => [u.user, u.total, u.remaining, u.exhausted]),
      [
        ['alice', 510, { total: null, upload: null, download: 0 }, true],
        ['bob', 1_100_000, { total: 0, upload: null, download: null }, true],
        ['carol', 0, { total: 1_000_000, upload: null, download: null }, false],
      ],
    );
    const table = usageTable(report);
    assert.match(table, /^period: month from 2026-12-01T00:00:00.000Z to 2027-01-01T00:00:00.000Z \(UTC\)/);
    assert.match(table, /^bob\s+391 KiB\s+684 KiB\s+1.05 MiB\s+total 977 KiB\s+total 0 B \(exhausted\)$/m);
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(10 * 2 ** 30), '10.0 GiB');
  });

  test('GET /users/usage of a server; the status page asks for it', async () => {
    const socks = await startSocks({ quotas: { ...NO_QUOTAS, users: { dave: { upload: 2048 } } } });
    const admin = new AdminServer(socks.server);
    const { port } = await admin.listen('127.0.0.1', 0);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/users/usage`);
      assert.equal(response.status, 200);
      const report = (await response.json()) as UsageReport;
      assert.deepEqual(report.users, [{ user: 'dave', up: 0, down: 0, total: 0, quota: { total: 0, upload: 2048, download: 0 }, remaining: { total: null, upload: 2048, download: null }, exhausted: false }]);
      assert.match(await (await fetch(`http://127.0.0.1:${port}/nope`)).text(), /\/users\/usage/);
      assert.match(STATUS_PAGE, /fetch\('users\/usage'/);
      assert.match(STATUS_PAGE, /id="quotas-section"/);
    } finally {
      await admin.close();
      await socks.close();
    }
  });
});
