// Builds the native helper with AddressSanitizer and UndefinedBehaviorSanitizer into
// build/native-sanitized/ (the sources are copied there; native/build is left alone) and prints the
// addon's path. `npm test` runs the native-path tests on it with libasan preloaded.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build', 'native-sanitized');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const file of readdirSync(join(root, 'native'))) {
  if (/\.(c|h)$/.test(file)) cpSync(join(root, 'native', file), join(out, file));
}
const sanitize = ['-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-fno-omit-frame-pointer', '-g'];
const gyp = JSON.parse(readFileSync(join(root, 'native', 'binding.gyp'), 'utf8'));
const linux = gyp.targets[0].conditions[0][1];
linux.cflags = [...linux.cflags.filter((f) => !f.startsWith('-O')), '-O1', ...sanitize];
linux.ldflags = [...(linux.ldflags ?? []), '-fsanitize=address,undefined'];
writeFileSync(join(out, 'binding.gyp'), JSON.stringify(gyp, null, 2));
const nodeGyp = [process.env.npm_config_node_gyp, join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')].find((p) => p && existsSync(p));
if (!nodeGyp) {
  process.stderr.write('build-native-sanitized: node-gyp was not found (it ships with npm)\n');
  process.exit(1);
}
// Node's own headers where they are installed beside it (npm passes them itself; a direct run would
// otherwise make node-gyp download them).
const prefix = join(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir || (existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null);
const args = [nodeGyp, 'rebuild', '--loglevel=warn', ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
const run = spawnSync(process.execPath, args, { cwd: out, stdio: ['ignore', 'ignore', 'inherit'] });
if (run.status !== 0) {
  process.stderr.write(`build-native-sanitized: node-gyp exit ${run.status ?? run.signal}\n`);
  process.exit(1);
}
process.stdout.write(join(out, 'build', 'Release', 'socksgate_native.node') + '\n');
