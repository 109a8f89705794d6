// `npm test`: the whole suite twice, once on the native helper and once on dgram and net.Sockets (the
// pure TypeScript paths), so both stay correct; then the native-path tests again on a build of the
// helper with AddressSanitizer and UndefinedBehaviorSanitizer. Without a built helper only the
// TypeScript pass runs, and it says so loudly.
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
function testFiles(paths) {
  const out = [];
  for (const path of paths) {
    if (path.endsWith('.test.js')) out.push(path);
    else out.push(...readdirSync(path, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.test.js')).map((f) => join(path, f)));
  }
  return out.sort();
}
if (testFiles(['build/test']).length === 0) {
  process.stderr.write('npm test: no build/test/**/*.test.js files (did tsc -p tsconfig.test.json run?)\n');
  process.exit(1);
}

// The tests that drive the helper hardest, for the sanitizer pass.
const NATIVE_PATH_TESTS = [
  'build/test/server',
  'build/test/udp',
  // Fixed-port mode's sockets on the helper, one per worker process (SO_REUSEPORT), and the steering between them.
  'build/test/cluster/workers.test.js',
  'build/test/cluster/fixed-port-nat.test.js',
  'build/test/reliability/hostile.test.js',
  'build/test/reliability/adversarial.test.js',
  'build/test/reliability/fuzz-and-leaks.test.js',
  'build/test/reliability/udp-leaks.test.js',
  'build/test/integration/udp-hot-path.test.js',
  'build/test/integration/bind.test.js',
  'build/test/integration/handshake.test.js',
];
if (existsSync(addon)) {
  const built = spawnSync(process.execPath, ['scripts/build-native-sanitized.mjs'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const libasan = spawnSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).stdout?.trim();
  if (built.status !== 0 || !libasan || !existsSync(libasan)) {
    process.stderr.write('\nERROR: the sanitizer build of the native helper failed (it needs gcc with libasan and libubsan: apt-get install -y gcc g++ make)\n');
    process.exit(1);
  }
  passes.push({
    name: 'native helper under AddressSanitizer and UBSan',
    env: '1',
    files: NATIVE_PATH_TESTS,
    extra: {
      SOCKSGATE_NATIVE_ADDON: built.stdout.trim(),
      LD_PRELOAD: libasan,
      // Node itself is not instrumented: its own allocations at exit are not leaks of the helper.
      ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
      UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
    },
  });
}

// --test-timeout also bounds each file as a whole, over the budgets its tests declare: the npm tarball
// test packs and installs two packages and builds the helper from source (about 110 s on a loaded
// two-core machine), so a file gets 300 s.
const args = ['--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=300000', '--test-force-exit'];
const results = [];
for (const pass of passes) {
  process.stdout.write(`\n=== npm test: relay sockets on the ${pass.name} (SOCKSGATE_NATIVE=${pass.env}) ===\n\n`);
  const started = Date.now();
  const run = spawnSync(process.execPath, [...args, ...testFiles(pass.files ?? ['build/test'])], { stdio: 'inherit', env: { ...process.env, ...pass.extra, SOCKSGATE_NATIVE: pass.env } });
  results.push({ ...pass, ok: run.status === 0, seconds: Math.round((Date.now() - started) / 1000) });
}
process.stdout.write('\n');
for (const r of results) process.stdout.write(`${r.ok ? 'passed' : 'FAILED'}: ${r.name} (${r.seconds} s)\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
