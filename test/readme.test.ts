import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { configReferenceTable } from '../src/config/reference.js';
import { OPTIONS } from '../src/config/options.js';
import { runPySocks } from './helpers/python.js';

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
  // The stress run the README names is a real script.
  assert.match(readme, /`npm run test:stress -- --runs 5`/);
  const scripts = (JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.equal(scripts['test:stress'], 'node scripts/test-stress.mjs');
});

test('the README library example runs as written', () => {
  const block = /## Server library\n\n```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'a js block under "## Library"');
  const file = fileURLToPath(new URL('build/readme-library-example.mjs', root));
  writeFileSync(file, block[1]!);
  const run = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 0, `${run.stderr} (the example imports the built package: npm ci builds dist/)`);
  assert.match(run.stdout, /^SOCKS5 on 127\.0\.0\.1:\d+\n$/);
});

test('the README DNS-through-the-proxy example works against a local DNS server', async () => {
  const { startDnsmasq, startSocks } = await import('./helpers/servers.js');
  const block = /### DNS through the proxy[\s\S]*?```python\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'a python block under "### DNS through the proxy"');
  const dns = await startDnsmasq({ 'example.org': ['127.0.0.7'] });
  const socks = await startSocks({ dnsServers: [dns.server] });
  try {
    const script = block[1]!.replace('"127.0.0.1", 1080', `"127.0.0.1", ${socks.port}`).replace('("192.0.2.53", 53)', `("127.0.0.1", ${dns.port})`);
    assert.notEqual(script, block[1], 'the example names the proxy and the DNS server as expected');
    const run = await runPySocks(script);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), `45 bytes from ('127.0.0.1', ${dns.port})`);
  } finally {
    await Promise.all([socks.close(), dns.close()]);
  }
});

test('the README client library example runs against a real proxy and echo targets', async () => {
  const { startEcho, startSocks } = await import('./helpers/servers.js');
  const { startUdpEcho } = await import('./helpers/udp.js');
  const { spawn } = await import('node:child_process');
  const block = /## Client library\n[^#]*?```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'a js block under "## Client library"');
  const socks = await startSocks();
  const tcp = await startEcho();
  const udp = await startUdpEcho();
  try {
    const script = block[1]!
      .replace("'socks5h://127.0.0.1:1080'", `'socks5h://127.0.0.1:${socks.port}'`)
      .replace('port: 8080', `port: ${tcp.port}`)
      .replace("'127.0.0.1', 7)", `'127.0.0.1', ${udp.port})`)
      .replace('port: 7 }', `port: ${udp.port} }`);
    const file = fileURLToPath(new URL('build/readme-client-example.mjs', root));
    writeFileSync(file, script);
    // Asynchronously: the proxy and the targets run in this process.
    const output = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [file], { timeout: 20_000 });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(output.code, 0, output.stderr.slice(0, 2000));
    assert.ok(output.stdout.length < 500, `unexpectedly long output (${output.stdout.length} bytes)`);
    assert.equal(output.stdout, `hello over TCP\nhello over UDP from 127.0.0.1:${udp.port}\nlargest datagram: 65497\n`);
  } finally {
    udp.close();
    await Promise.all([socks.close(), tcp.close()]);
  }
});
