import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { restartOnlyChanges } from '../../src/server/from-config.js';

describe('configuration: quotas', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-quota-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const file = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  test('defaults: no quota, a month in UTC, end, per-user metrics off', async () => {
    const config = await loadConfig();
    assert.deepEqual(config.quotas, { period: 'month', timeZone: 'UTC', onExhausted: 'end', total: 0, upload: 0, download: 0, users: {}, chunk: 1024 * 1024 });
    assert.equal(config.metrics.perUser, false);
  });

  test('byte sizes with units, per-user overrides, a time zone; a flag too', async () => {
    const path = await file('ok.yaml', 'quotas:\n  period: week\n  timeZone: Europe/Berlin\n  total: 10GiB\n  download: 1.5GB\n  users:\n    alice: { total: 50GiB }\n    bob: { upload: 512KiB, total: 0 }\nmetrics: { perUser: true }\n');
    const config = await loadConfig({ file: path, flags: new Map<string, unknown>([['quotas.chunk', '64KiB']]) });
    assert.equal(config.quotas.total, 10 * 2 ** 30);
    assert.equal(config.quotas.download, 1_500_000_000);
    assert.equal(config.quotas.chunk, 65536);
    assert.deepEqual(config.quotas.users, { alice: { total: 50 * 2 ** 30 }, bob: { upload: 512 * 1024, total: 0 } });
    assert.equal(config.quotas.timeZone, 'Europe/Berlin');
    assert.equal(config.metrics.perUser, true);
  });

  test('invalid keys are named with the reason', async () => {
    const path = await file('bad.yaml', 'quotas:\n  timeZone: Mars/Olympus\n  total: lots\n  period: year\n  chunk: 100\n  users:\n    alice: { totl: 1GB }\n');
    await assert.rejects(loadConfig({ file: path }), (error: Error) => {
      assert.match(error.message, /quotas\.timeZone in .*: got "Mars\/Olympus"; "Mars\/Olympus" is not a time zone/);
      assert.match(error.message, /quotas\.total in .*: got "lots"; expected a byte count/);
      assert.match(error.message, /quotas\.period in .*/);
      assert.match(error.message, /quotas\.chunk in .*: got 100; must be 0 or at least 4096 bytes/);
      assert.match(error.message, /unknown key "quotas\.users\.alice\.totl"/);
      return true;
    });
  });

  test('quotas reload live: a change is not a restart-only key', async () => {
    const before = await loadConfig();
    const after = await loadConfig({ flags: new Map<string, unknown>([['quotas.total', '1GiB']]) });
    assert.deepEqual(restartOnlyChanges(before, after), []);
  });
});
