import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseConfigText, validateConfig } from '../../src/config/load.js';
import { OPTIONS } from '../../src/config/options.js';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

test('the README gateway examples: the YAML validates as written, the command uses real flags', () => {
  const section = /## Gateway mode[\s\S]*?(?=\n## )/.exec(readme)?.[0];
  assert.ok(section, 'a "## Gateway mode" section');
  const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(yaml, 'a yaml block in it');
  const config = validateConfig(parseConfigText(yaml, 'README.md'), { file: 'README.md' });
  assert.deepEqual(config.upstreams, ['socks5://gw:secret@10.0.0.11:1080', 'socks5://10.0.0.12:1080']);
  assert.deepEqual(config.upstream, { select: 'hash', udp: 'udp', healthInterval: 5, healthTimeout: 2, healthFailures: 2 });
  const shell = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(shell, 'a sh block in it');
  const flags = new Set(OPTIONS.map((o) => o.flag));
  for (const flag of shell.match(/--[a-z-]+/g) ?? []) assert.ok(flags.has(flag), `${flag} is not a serve flag`);
});
