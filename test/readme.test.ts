import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { configReferenceTable } from '../src/config/reference.js';
import { OPTIONS } from '../src/config/options.js';

const root = new URL('../../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');

test('the README config reference is the one the schema generates (npm run docs)', () => {
  const begin = readme.indexOf('<!-- config-reference:begin -->');
  const end = readme.indexOf('<!-- config-reference:end -->');
  assert.ok(begin > 0 && end > begin);
  const table = readme.slice(begin, end).split('\n').slice(1, -1).join('\n');
  assert.equal(table, configReferenceTable(), 'run: npm run build && npm run docs');
  for (const option of OPTIONS) assert.ok(readme.includes(option.flag), option.flag);
});

test('the README quick start names the two commands', () => {
  assert.match(readme, /npm ci && npm start/);
  assert.match(readme, /^npm test\b/m);
});

test('the README library example runs as written', () => {
  const block = /## Library\n\n```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'a js block under "## Library"');
  const file = fileURLToPath(new URL('build/readme-library-example.mjs', root));
  writeFileSync(file, block[1]!);
  const run = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 0, `${run.stderr} (the example imports the built package: npm ci builds dist/)`);
  assert.match(run.stdout, /^SOCKS5 on 127\.0\.0\.1:\d+\n$/);
});
