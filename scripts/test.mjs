// `npm test`: the whole suite twice, once with the relay sockets on the native UDP helper and once on
// dgram (the pure TypeScript path), so both stay correct. Without a built helper only the second runs,
// and it says so loudly.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const addon = 'native/build/Release/socksgate_native.node';
const passes = [];
if (existsSync(addon)) passes.push({ name: 'native helper (batched UDP, TCP tunnels)', env: '1' });
else process.stderr.write(`\nWARNING: ${addon} is not built (npm install builds it with a C compiler): only the TypeScript relay is tested.\n\n`);
passes.push({ name: 'TypeScript relay (dgram)', env: '0' });

// Only *.test.js files are tests: given a folder, node --test would also run every module under
// build/test/ (the helpers), each as a "test" that passes by loading.
const files = readdirSync('build/test', { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.test.js'))
  .map((f) => join('build/test', f))
  .sort();
if (files.length === 0) {
  process.stderr.write('npm test: no build/test/**/*.test.js files (did tsc -p tsconfig.test.json run?)\n');
  process.exit(1);
}
const args = ['--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=120000', '--test-force-exit', ...files];
const results = [];
for (const pass of passes) {
  process.stdout.write(`\n=== npm test: relay sockets on the ${pass.name} (SOCKSGATE_NATIVE=${pass.env}) ===\n\n`);
  const started = Date.now();
  const run = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, SOCKSGATE_NATIVE: pass.env } });
  results.push({ ...pass, ok: run.status === 0, seconds: Math.round((Date.now() - started) / 1000) });
}
process.stdout.write('\n');
for (const r of results) process.stdout.write(`${r.ok ? 'passed' : 'FAILED'}: ${r.name} (${r.seconds} s)\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
