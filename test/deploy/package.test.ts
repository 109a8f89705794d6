// The npm tarball as a user gets it: `npm pack` of this tree, installed into scratch projects. Once
// built from source by the install hook, once from the prebuild with no compiler on PATH; in both the
// native helper loads, `require` and `import` give the library, and `npx socksgate serve` relays a
// CONNECT and a UDP round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectRoundTrip, run, startProgram, udpRoundTrip } from '../helpers/ship.js';
import { cleanEnv, packCopy } from '../helpers/pack.js';
import { listenPorts } from '../helpers/cli.js';
import { requireProgram } from '../helpers/servers.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** What the build needs from native/: binding.gyp's sources and every header they include, transitively. */
function neededNativeFiles(): string[] {
  const gyp = readFileSync(join(ROOT, 'native', 'binding.gyp'), 'utf8');
  const sources = [...gyp.matchAll(/"([\w.-]+\.c)"/g)].map((m) => m[1]!);
  const needed = new Set<string>(['binding.gyp']);
  const queue = [...sources];
  for (let i = 0; i < queue.length && i < 1000; i++) {
    const file = queue[i]!;
    if (needed.has(file)) continue;
    needed.add(file);
    for (const m of readFileSync(join(ROOT, 'native', file), 'utf8').matchAll(/^#include "([^"]+)"/gm)) queue.push(m[1]!);
  }
  return [...needed].map((f) => `package/native/${f}`);
}

function scratchProject(scratch: string, name: string): string {
  const dir = join(scratch, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `scratch-${name}`, version: '1.0.0', private: true }));
  return dir;
}

/** `npx socksgate serve` in the project: a CONNECT and a UDP round trip; returns its udpIo text. */
async function serveAndRelay(project: string, env: NodeJS.ProcessEnv): Promise<string> {
  const serve = startProgram('npx', ['--no', 'socksgate', 'serve', '--listen', '127.0.0.1:0', '--workers', '1', '--allow-loopback-targets', '--log-format', 'json'], {
    cwd: project,
    env,
    detached: true,
  });
  try {
    const line = await serve.waitForLine((l) => Array.isArray(l.listen), 60_000);
    const port = listenPorts(line).get('127.0.0.1')!;
    await connectRoundTrip(port);
    await udpRoundTrip(port);
    return String(line.udpIo);
  } finally {
    // npx runs socksgate in a child of its own: the group goes.
    if (serve.exitCode === null) process.kill(-serve.pid, 'SIGTERM');
    await serve.exited(30_000);
  }
}

function libraryKeys(project: string, env: NodeJS.ProcessEnv): { required: string[]; imported: string[] } {
  const required = run(process.execPath, ['-e', "process.stdout.write(JSON.stringify(Object.keys(require('socksgate')).sort()))"], { cwd: project, env });
  const imported = run(process.execPath, ['--input-type=module', '-e', "process.stdout.write(JSON.stringify(Object.keys(await import('socksgate')).sort()))"], { cwd: project, env });
  return { required: JSON.parse(required) as string[], imported: JSON.parse(imported) as string[] };
}

test('the npm tarball installs, builds or takes the prebuild, and serves as installed', { timeout: 900_000 }, async (t) => {
  requireProgram('tar', 'tar');
  requireProgram('git', 'git');
  const scratch = mkdtempSync(join(tmpdir(), 'socksgate-pack-'));
  t.after(() => rmSync(scratch, { recursive: true, force: true }));
  const packs = packCopy(scratch);
  const tarball = packs.server!;
  const client = packs.client;
  const listed = new Set(run('tar', ['-tzf', tarball]).split('\n').filter(Boolean));

  await t.test('the tarball holds what the build and the runtime need', () => {
    const missing = [...neededNativeFiles(), 'package/package.json', 'package/LICENSE', 'package/README.md', 'package/dist/cli.js', 'package/dist/index.js', 'package/dist/index.d.ts', 'package/scripts/build-native.mjs'].filter((f) => !listed.has(f));
    assert.deepEqual(missing, [], 'files the build or runtime needs are in the tarball');
    const prebuilds = [...listed].filter((f) => /^package\/native\/prebuilds\/linux-x64\/[^/]+\.node$/.test(f));
    assert.equal(prebuilds.length, 1, `one linux-x64 prebuild (${prebuilds.join(', ')})`);
    assert.equal([...listed].filter((f) => f.startsWith('package/src/') || f.startsWith('package/test/') || f.startsWith('package/packages/') || f.startsWith('package/native/build/')).length, 0, 'no sources of the tests or local builds, no workspace folders');
    const manifest = JSON.parse(run('tar', ['-xzOf', tarball, 'package/package.json'])) as { dependencies: Record<string, string> };
    const clientManifest = JSON.parse(run('tar', ['-xzOf', client, 'package/package.json'])) as { version: string };
    assert.equal(manifest.dependencies['socksgate-client'], clientManifest.version, 'the server depends on the client package packed with it');
  });

  await t.test('built from source by the install hook', async () => {
    const project = scratchProject(scratch, 'built');
    const env = cleanEnv({ SOCKSGATE_NATIVE: '' });
    run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--build-from-source', '--foreground-scripts', client, tarball], { cwd: project, env });
    const installed = join(project, 'node_modules', 'socksgate');
    assert.ok(existsSync(join(installed, 'native', 'build', 'Release', 'socksgate_native.node')), 'the hook built the helper');
    assert.ok(!existsSync(join(installed, 'native', 'build-error.txt')), 'and recorded no build error');
    const udpIo = await serveAndRelay(project, env);
    assert.match(udpIo, /^native \(/, 'the served process runs on the native helper');
    const keys = libraryKeys(project, env);
    assert.ok(keys.imported.includes('SocksServer') && keys.imported.length > 5, `import gives the library (${keys.imported.length} exports)`);
    assert.deepEqual(keys.required, keys.imported, 'require gives the same exports as import');
  });

  await t.test('the prebuild, with no compiler on PATH', async () => {
    const project = scratchProject(scratch, 'prebuilt');
    // PATH holds node, npm, npx and sh only: no cc, gcc, make or python3.
    const bin = join(scratch, 'bin-no-compiler');
    mkdirSync(bin);
    for (const [name, target] of [
      ['node', process.execPath],
      ['npm', requireProgram('npm', 'nodejs')],
      ['npx', requireProgram('npx', 'nodejs')],
      ['sh', '/bin/sh'],
    ] as const) symlinkSync(target, join(bin, name));
    assert.deepEqual(readdirSync(bin).sort(), ['node', 'npm', 'npx', 'sh']);
    const env = cleanEnv({ PATH: bin, SOCKSGATE_NATIVE: '' });
    const out = run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', client, tarball], { cwd: project, env });
    const installed = join(project, 'node_modules', 'socksgate');
    assert.ok(!existsSync(join(installed, 'native', 'build')), `nothing was compiled:\n${out}`);
    assert.ok(existsSync(join(installed, 'native', 'prebuilds', 'linux-x64')), 'the prebuild is installed');
    const udpIo = await serveAndRelay(project, env);
    assert.match(udpIo, /^native \(/, 'the served process runs on the prebuilt helper');
  });

  await t.test('without a compiler or a prebuild the start-up line gives the build error', async () => {
    // The same project: no prebuild, and a rebuild from source with no compiler records why it failed.
    const project = join(scratch, 'prebuilt');
    const installed = join(project, 'node_modules', 'socksgate');
    const env = cleanEnv({ PATH: join(scratch, 'bin-no-compiler'), SOCKSGATE_NATIVE: '' });
    rmSync(join(installed, 'native', 'prebuilds'), { recursive: true });
    run('npm', ['rebuild', 'socksgate', '--build-from-source', '--foreground-scripts'], { cwd: project, env });
    const recorded = readFileSync(join(installed, 'native', 'build-error.txt'), 'utf8');
    assert.match(recorded, /python3, make, cc not found on PATH/);
    const udpIo = await serveAndRelay(project, env);
    assert.equal(udpIo, `dgram (native helper not built: ${recorded.trim()})`);
  });
});
