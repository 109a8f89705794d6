// The client package as a user gets it: `npm pack` of the socksgate-client workspace, installed into a
// scratch project on its own. It must install no third-party package, and work from `import` and from
// `require()` (Node >= 20.19 loads ES modules with require), JavaScript and TypeScript alike, relaying a
// CONNECT through a socksgate server byte for byte. The install size is reported next to `socks`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { cleanEnv, packCopy } from '../helpers/pack.js';
import { requireProgram, startEcho, startSocks } from '../helpers/servers.js';
import { run } from '../helpers/ship.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Runs node on a script without blocking this process, which serves the proxy the script uses. */
async function node(script: string, cwd: string, env: NodeJS.ProcessEnv): Promise<unknown> {
  const { stdout } = await promisify(execFile)(process.execPath, [script], { cwd, env, timeout: 30_000 });
  return JSON.parse(stdout);
}

function treeSize(dir: string): number {
  let bytes = 0;
  for (const name of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const stat = statSync(join(dir, name), { throwIfNoEntry: false });
    if (stat?.isFile()) bytes += stat.size;
  }
  return bytes;
}

const ESM = (proxy: string, port: number): string => `
import { connect, SocksError } from 'socksgate-client';
import { parseReply } from 'socksgate-client/protocol';
const socket = await connect({ proxy: '${proxy}', host: '127.0.0.1', port: ${port} });
socket.end('esm round trip');
let text = '';
for await (const chunk of socket) text += chunk;
console.log(JSON.stringify({ text, error: typeof SocksError, codec: typeof parseReply }));
`;

const CJS = (proxy: string, port: number): string => `
const { connect, SocksError } = require('socksgate-client');
const { parseReply } = require('socksgate-client/protocol');
connect({ proxy: '${proxy}', host: '127.0.0.1', port: ${port} }).then(async (socket) => {
  socket.end('cjs round trip');
  let text = '';
  for await (const chunk of socket) text += chunk;
  console.log(JSON.stringify({ text, error: typeof SocksError, codec: typeof parseReply }));
});
`;

const TS_CJS = `
import socks = require('socksgate-client');
import type { SocksAddress } from 'socksgate-client';
const bound: Promise<SocksAddress> = socks.connectWithReply({ proxy: { host: '127.0.0.1', port: 1080 }, host: 'example.org', port: 80 }).then((r) => r.bound);
void bound;
`;

test('the socksgate-client tarball installs alone and works from import and require', { timeout: 600_000 }, async (t) => {
  requireProgram('tar', 'tar');
  requireProgram('git', 'git');
  const scratch = mkdtempSync(join(tmpdir(), 'socksgate-client-pack-'));
  t.after(() => rmSync(scratch, { recursive: true, force: true }));
  const { client } = packCopy(scratch, 'client');

  const listed = run('tar', ['-tzf', client]).split('\n').filter(Boolean).sort();
  for (const file of ['package/package.json', 'package/LICENSE', 'package/README.md', 'package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/protocol/index.js', 'package/dist/control.js']) {
    assert.ok(listed.includes(file), `${file} is in the tarball`);
  }
  assert.deepEqual(listed.filter((f) => !f.startsWith('package/dist/') && !['package/package.json', 'package/LICENSE', 'package/README.md'].includes(f)), [], 'nothing but dist/ and the three files');

  const project = join(scratch, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'scratch-client', version: '1.0.0', private: true }));
  const env = cleanEnv();
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', client], { cwd: project, env });
  const tree = JSON.parse(run('npm', ['ls', '--omit=dev', '--all', '--json'], { cwd: project, env })) as { dependencies: Record<string, { dependencies?: object }> };
  assert.deepEqual(Object.keys(tree.dependencies), ['socksgate-client']);
  assert.equal(tree.dependencies['socksgate-client']!.dependencies, undefined, 'socksgate-client depends on nothing');
  assert.deepEqual(readdirSync(join(project, 'node_modules')).filter((n) => !n.startsWith('.')), ['socksgate-client'], 'node_modules holds the package alone');

  const socks = await startSocks();
  const echo = await startEcho();
  try {
    const proxy = `socks5h://127.0.0.1:${socks.port}`;
    writeFileSync(join(project, 'esm.mjs'), ESM(proxy, echo.port));
    writeFileSync(join(project, 'cjs.cjs'), CJS(proxy, echo.port));
    assert.deepEqual(await node('esm.mjs', project, env), { text: 'esm round trip', error: 'function', codec: 'function' });
    assert.deepEqual(await node('cjs.cjs', project, env), { text: 'cjs round trip', error: 'function', codec: 'function' });
  } finally {
    await Promise.all([socks.close(), echo.close()]);
  }

  // TypeScript accepts require() of the package under module nodenext (what the types promise).
  writeFileSync(join(project, 'check.cts'), TS_CJS);
  run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--module', 'nodenext', '--target', 'es2022', '--strict', '--noEmit', '--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', 'check.cts'], { cwd: project, env });

  const clientBytes = treeSize(join(project, 'node_modules'));
  t.diagnostic(`installed size: socksgate-client ${clientBytes} bytes in 1 package`);
  // socks, for comparison, as installed in this repository (a devDependency), with its dependencies.
  const socksDir = join(ROOT, 'node_modules', 'socks');
  const manifest = JSON.parse(readFileSync(join(socksDir, 'package.json'), 'utf8')) as { version: string; dependencies?: Record<string, string> };
  const deps = Object.keys(manifest.dependencies ?? {});
  const socksBytes = [socksDir, ...deps.map((d) => join(ROOT, 'node_modules', d))].reduce((sum, dir) => sum + treeSize(dir), 0);
  t.diagnostic(`installed size: socks@${manifest.version} ${socksBytes} bytes in ${deps.length + 1} packages (socks, ${deps.join(', ')})`);
});
