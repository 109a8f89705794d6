// The API reference in docs/api/ is what TypeDoc generates from the client package's sources now
// (npm run docs:api): regenerated into a scratch folder and compared file by file, so it cannot go stale.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'node:test';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

test('docs/api is the TypeDoc reference of the client package as it is (npm run docs:api)', { timeout: 120_000 }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'socksgate-api-docs-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--options', 'typedoc.json', '--out', out, '--logLevel', 'Warn'], { cwd: ROOT, timeout: 110_000 });
  const list = (dir: string): string[] => readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.md')).sort();
  const committed = join(ROOT, 'docs', 'api');
  assert.deepEqual(list(committed), list(out), 'the same files: run npm run docs:api and commit docs/api');
  for (const file of list(out)) {
    assert.equal(readFileSync(join(committed, file), 'utf8'), readFileSync(join(out, file), 'utf8'), `docs/api/${file} is current: run npm run docs:api`);
  }
  assert.match(readFileSync(join(committed, 'socksgate-client.md'), 'utf8'), /### connectWithReply\(\)/);
});
