// What a new user meets first on the command line: usage errors exit 2 as the README says, `passwd`
// on a terminal does not echo the password, help shows defaults as people write them, and an
// unknown key inside a rule is named by its place with the keys that exist there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from '../helpers/cli.js';
import { PYTHON } from '../helpers/python.js';
import { requireProgram } from '../helpers/servers.js';
import { UserStore } from '../../src/server/users.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, input: '' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

test('a bad flag, value or command exits 2 with the reason, as the README says', () => {
  assert.match(readFileSync(README, 'utf8'), /2 for a bad flag, an invalid configuration or users file/);
  const unknown = cli(['serve', '--no-such-flag']);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /^error: unknown option '--no-such-flag'/);
  const value = cli(['tunnel', '--server', 'socks5://127.0.0.1:1080', '--listen', 'nowhere']);
  assert.equal(value.status, 2);
  assert.match(value.stderr, /argument 'nowhere' is invalid/);
  const command = cli(['serv']);
  assert.equal(command.status, 2);
  assert.match(command.stderr, /unknown command 'serv'/);
  const config = cli(['serve', '--workers', 'many']);
  assert.equal(config.status, 2);
  assert.match(config.stderr, /workers \(flag --workers\): got "many"/);
  assert.equal(cli(['--version']).status, 0);
  assert.equal(cli(['serve', '--help']).status, 0);
});

test('tunnel --help shows its defaults as they are written on the command line', () => {
  const help = cli(['tunnel', '--help']);
  assert.equal(help.status, 0);
  const text = help.stdout.replace(/\s+/g, ' ');
  assert.match(text, /--listen <HOST:PORT> where local applications connect \(default: 127\.0\.0\.1:1080\)/);
  assert.match(text, /default: info\)/);
  assert.doesNotMatch(text, /[{}]|"127|default: "/, 'no JSON objects or quoted strings as defaults');
});

test('an unknown key inside a rule is named by its place, with the keys a rule has', () => {
  const run = cli(['serve', '--rules', '[{action: allow, destinations: [192.0.2.0/24]}, {action: deny, destination: [198.51.100.1]}]']);
  assert.equal(run.status, 2);
  assert.match(
    run.stderr,
    /rules\[1\] \(flag --rules\): unknown key "rules\[1\]\.destination"; known keys here: action, name, clients, users, groups, commands, destinations, ports\n/,
  );
});

// Runs `socksgate passwd` on a pseudo-terminal: waits for the prompt, types, and returns what the
// terminal showed. Every wait is bounded.
const ON_A_TERMINAL = `
import os, pty, select, sys, time
typed = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
shown = b''
def read(until, seconds):
    global shown
    end = time.monotonic() + seconds
    while until(shown) is False and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown += chunk
read(lambda s: b'Password' in s, 20)
os.write(fd, typed)
read(lambda s: False, 20)
_, status = os.waitpid(pid, 0)
sys.stdout.write(repr(shown) + '\\n' + str(os.waitstatus_to_exitcode(status)) + '\\n')
`;

test('passwd reads the password from a terminal without echoing it', async (t) => {
  requireProgram(PYTHON, 'python3');
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-passwd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'users.txt');
  // "s3cretX", Backspace, Enter: the password is s3cret.
  const run = spawnSync(PYTHON, ['-c', ON_A_TERMINAL, 's3cretX\x7f\r', process.execPath, CLI, 'passwd', '--file', file, 'alice'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  const [shown, status] = run.stdout.trim().split('\n');
  assert.equal(status, '0', `passwd exited 0; the terminal showed ${shown}`);
  assert.match(shown!, /Password \(then Enter\): /);
  assert.match(shown!, /added user alice in /);
  assert.doesNotMatch(shown!, /s3cret/, 'the password never appears on the terminal');
  const users = await UserStore.load(file);
  assert.equal(await users.verify('alice', Buffer.from('s3cret')), true, 'Backspace erased the X');
  assert.equal(await users.verify('alice', Buffer.from('s3cretX')), false);
});

test('the README\'s quick start installs the same Debian packages as .ci/run', () => {
  const readme = readFileSync(README, 'utf8');
  const quickStart = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## Command line'));
  const line = /^apt-get install -y (.+)$/m.exec(quickStart);
  assert.ok(line, 'the quick start has an apt-get install line');
  const ci = /^packages=\(([^)]*)\)$/m.exec(readFileSync(fileURLToPath(new URL('../../../.ci/run', import.meta.url)), 'utf8'));
  assert.ok(ci, '.ci/run lists its packages');
  assert.deepEqual(line[1]!.trim().split(/\s+/).sort(), ci[1]!.trim().split(/\s+/).sort());
});
