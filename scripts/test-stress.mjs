// `npm run test:stress [-- --runs N]`: the whole `npm test`, N times in a row (1 by default), with a
// CPU-bound load on every core beside it, so races that a quiet machine hides show up. The load is
// `stress-ng --cpu <cores>` where Debian's stress-ng is installed, else one bounded busy loop per core.
// Stops at the first failing run; prints each run's result and time.
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

const runsFlag = process.argv.indexOf('--runs');
const runs = runsFlag >= 0 ? Number(process.argv[runsFlag + 1]) : 1;
if (!Number.isInteger(runs) || runs < 1 || runs > 50) {
  process.stderr.write('test:stress: --runs takes a whole number from 1 to 50\n');
  process.exit(2);
}
const cores = availableParallelism();
// Every load ends by itself: one hour per run at most, even if this script is killed.
const loadSeconds = 3600 * runs;

function startLoad() {
  const found = spawnSync('stress-ng', ['--version'], { stdio: 'ignore' });
  if (found.status === 0) {
    const child = spawn('stress-ng', ['--cpu', String(cores), '--timeout', `${loadSeconds}s`, '--quiet'], { stdio: 'ignore' });
    return { what: `stress-ng --cpu ${cores}`, child };
  }
  // A busy loop per core (worker threads of one child process), ending by the same deadline.
  const child = spawn(process.execPath, ['-e', busyLoop(cores, loadSeconds)], { stdio: 'ignore' });
  return { what: `${cores} busy loops (stress-ng is not installed: apt-get install -y stress-ng)`, child };
}

/** Source of a process that keeps `cores` threads busy until `seconds` have passed. */
function busyLoop(count, seconds) {
  const spin = `const end = Date.now() + ${seconds * 1000}; let x = 0; while (Date.now() < end) for (let i = 0; i < 1e6; i++) x = (x * 31 + i) | 0;`;
  return `const { Worker } = require('node:worker_threads'); for (let i = 1; i < ${count}; i++) new Worker(${JSON.stringify(spin)}, { eval: true }); ${spin}`;
}

const load = startLoad();
let test = null;
const stopAll = () => {
  // npm test runs in its own process group: the whole tree (npm, the runner, its test files) ends.
  if (test !== null && test.exitCode === null) process.kill(-test.pid, 'SIGTERM');
  if (load.child.exitCode === null) load.child.kill('SIGTERM');
};
process.on('exit', stopAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));
process.stdout.write(`test:stress: ${runs} run(s) of npm test beside ${load.what}\n`);

const results = [];
for (let run = 1; run <= runs; run++) {
  const started = Date.now();
  test = spawn('npm', ['test'], { stdio: 'inherit', detached: true });
  const code = await new Promise((resolve) => test.once('exit', (status) => resolve(status)));
  const seconds = Math.round((Date.now() - started) / 1000);
  results.push({ run, ok: code === 0, seconds });
  process.stdout.write(`\ntest:stress: run ${run} of ${runs} ${code === 0 ? 'passed' : 'FAILED'} in ${seconds} s\n`);
  if (code !== 0) break;
}
stopAll();
const passed = results.filter((r) => r.ok).length;
process.stdout.write(`\ntest:stress: ${passed} of ${runs} consecutive run(s) passed beside ${load.what} (${results.map((r) => `${r.seconds} s`).join(', ')})\n`);
process.exit(passed === runs ? 0 : 1);
