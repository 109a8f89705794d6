// The native helper (native/*.c, target socksgate_native) as npm handles it.
//
// `node scripts/build-native.mjs` is the install hook. In an installed package, a prebuild in
// native/prebuilds/ that loads here is used as it is; otherwise node-gyp builds native/build/Release.
// In the development tree (it has src/) and with `npm install --build-from-source` it always builds.
// Where it cannot be built socksgate uses its pure TypeScript relay, so a failure never fails the
// install (SOCKSGATE_NATIVE=1 makes it fail); npm hides a hook's output, so the reason is also kept in
// native/build-error.txt, which the start-up line quotes.
//
// `node scripts/build-native.mjs prebuild` (npm pack's prepack) makes the prebuild for this platform
// with prebuildify and leaves a copy in native/build/Release, where the development tree loads it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const native = join(root, 'native');
const errorFile = join(native, 'build-error.txt');
const built = join(native, 'build', 'Release', 'socksgate_native.node');
const say = (text) => process.stderr.write(`socksgate: ${text}\n`);
const required = process.env.SOCKSGATE_NATIVE === '1';

if (process.argv[2] === 'prebuild') prebuild();
else install();

function install() {
  if (process.platform !== 'linux') {
    say('the native helper is Linux only; the TypeScript relay is used');
    return;
  }
  if (process.env.SOCKSGATE_NATIVE === '0') {
    say('SOCKSGATE_NATIVE=0: the native helper is not built');
    return;
  }
  rmSync(errorFile, { force: true });
  const fromSource = existsSync(join(root, 'src')) || process.env.npm_config_build_from_source === 'true';
  if (!fromSource) {
    const prebuild = loadablePrebuild();
    if (prebuild) {
      say(`using the prebuilt native helper (${prebuild})`);
      return;
    }
  }
  const failure = build();
  if (failure === null) {
    say(`built the native helper (${built})`);
    return;
  }
  writeFileSync(errorFile, `${failure}\n`);
  if (required) {
    say(`SOCKSGATE_NATIVE=1 but the native helper did not build: ${failure}`);
    process.exit(1);
  }
  say(`the native helper did not build, the TypeScript relay is used: ${failure}`);
}

/** The prebuild node-gyp-build picks for this platform, if there is one and it loads. */
function loadablePrebuild() {
  try {
    const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build');
    const path = nodeGypBuild.path(native);
    createRequire(import.meta.url)(path);
    return path.slice(root.length + 1);
  } catch {
    return null;
  }
}

/** node-gyp rebuild in native/; null when built, else why not in one line. */
function build() {
  const missing = ['python3', 'make', 'cc'].filter((tool) => !onPath(tool));
  if (missing.length > 0) return `${missing.join(', ')} not found on PATH (the build needs python3, make and a C compiler)`;
  const gyp = nodeGyp();
  if (!gyp) return 'node-gyp was not found (it ships with npm)';
  const run = spawnSync(process.execPath, [gyp, 'rebuild', '--loglevel=warn'], { cwd: native, env: gypEnv(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.status === 0 && existsSync(built)) return null;
  const output = `${run.stdout ?? ''}${run.stderr ?? ''}`;
  process.stderr.write(output);
  // The compiler's first error says more than node-gyp's exit status.
  const first = output.split('\n').find((line) => /\berror\b/i.test(line) && !/^gyp (ERR|info)/.test(line));
  return `node-gyp rebuild failed (exit ${run.status ?? run.signal})${first ? `: ${first.trim()}` : ''}`;
}

// npm tells its scripts where its node-gyp is; otherwise the copy that ships with npm.
function nodeGyp() {
  return [process.env.npm_config_node_gyp, join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')]
    .find((p) => p && existsSync(p));
}

// The headers of the running Node.js when they are installed beside it (as Node's own tarball and
// Debian's and NodeSource's packages lay them out), so node-gyp need not download them.
function gypEnv(extra = {}) {
  const prefix = dirname(dirname(process.execPath));
  const env = { ...process.env, ...extra };
  if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  return env;
}

function onPath(tool) {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, tool)));
}

function prebuild() {
  const bin = join(root, 'node_modules', 'prebuildify', 'bin.js');
  if (!existsSync(bin)) {
    say('prebuildify is missing: npm install (it is a devDependency)');
    process.exit(1);
  }
  rmSync(join(native, 'prebuilds'), { recursive: true, force: true });
  const gyp = nodeGyp();
  const env = gypEnv(gyp ? { PREBUILD_NODE_GYP: gyp } : {});
  const run = spawnSync(process.execPath, [bin, '--napi', '--strip', '--tag-libc', '--name', 'socksgate_native', '--cwd', native], { stdio: 'inherit', env });
  if (run.status !== 0) {
    say(`prebuildify failed (exit ${run.status ?? run.signal})`);
    process.exit(1);
  }
  const folder = join(native, 'prebuilds', `${process.platform}-${process.arch}`);
  const file = readdirSync(folder).find((name) => name.endsWith('.node'));
  if (!file) {
    say(`prebuildify left no .node file in ${folder}`);
    process.exit(1);
  }
  // prebuildify moved the build away: the development tree keeps loading the same code.
  mkdirSync(dirname(built), { recursive: true });
  copyFileSync(join(folder, file), built);
  say(`prebuilt native/prebuilds/${process.platform}-${process.arch}/${file}`);
}
