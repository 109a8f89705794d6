// deploy/systemd/socksgate.service under its own sandbox: `serve` runs behind a seccomp filter on
// socket() families as systemd applies RestrictAddressFamilies= (other families fail with
// EAFNOSUPPORT). deploy.test.ts runs `systemd-analyze verify` on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CLI, listenPorts } from '../helpers/cli.js';
import { PYTHON } from '../helpers/python.js';
import { requireProgram } from '../helpers/servers.js';
import { connectRoundTrip, startProgram, udpRoundTrip } from '../helpers/ship.js';

const UNIT = fileURLToPath(new URL('../../../deploy/systemd/socksgate.service', import.meta.url));

// Installs the filter, then execs the program: socket() with a family outside the list fails with
// EAFNOSUPPORT, as systemd's RestrictAddressFamilies= allow-list makes it (families past AF_MAX too).
const RESTRICT = `
import errno, os, seccomp, socket, sys
allowed = {getattr(socket, name) for name in sys.argv[1].split()}
AF_MAX = 46
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for family in range(AF_MAX):
    if family not in allowed:
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, AF_MAX))
f.load()
os.execv(sys.argv[2], sys.argv[2:])
`;

function unitFamilies(): string {
  const line = readFileSync(UNIT, 'utf8').split('\n').find((l) => l.startsWith('RestrictAddressFamilies='));
  assert.ok(line, 'the unit restricts address families');
  return line.slice('RestrictAddressFamilies='.length).trim();
}

function requireSeccomp(): void {
  requireProgram(PYTHON, 'python3');
  const probe = spawnSync(PYTHON, ['-c', 'import seccomp'], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error(`python3-seccomp is missing; install it with: apt-get install -y python3-seccomp\n${probe.stderr}`);
}

/** `serve` under the filter; its listening line, and every line it logged until then. */
async function serveRestricted(families: string, extra: string[]): Promise<{ warnings: Array<Record<string, unknown>>; port: number; stop: () => Promise<number> }> {
  const serve = startProgram(PYTHON, ['-c', RESTRICT, families, process.execPath, CLI, 'serve', '--listen', '127.0.0.1:0', '--allow-loopback-targets', '--log-format', 'json', ...extra]);
  const line = await serve.waitForLine((l) => Array.isArray(l.listen), 30_000).catch(async (error: Error) => {
    serve.kill('SIGKILL');
    throw error;
  });
  return {
    warnings: serve.lines.filter((l) => l.level === 40),
    port: listenPorts(line).get('127.0.0.1')!,
    stop: async () => {
      serve.kill('SIGTERM');
      return serve.exited(30_000);
    },
  };
}

test('the filter denies what the unit leaves out', () => {
  requireSeccomp();
  const probe = spawnSync(PYTHON, ['-c', RESTRICT, 'AF_INET AF_INET6 AF_UNIX', PYTHON, '-c', 'import socket\ntry:\n  socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\nexcept OSError as e:\n  print(e.errno)\n'], { encoding: 'utf8' });
  assert.equal(probe.status, 0, probe.stderr);
  assert.equal(probe.stdout.trim(), String(97), 'netlink socket() fails with EAFNOSUPPORT (97)');
});

test('serve runs under the unit\'s RestrictAddressFamilies, with workers', async () => {
  requireSeccomp();
  const families = unitFamilies();
  assert.match(families, /\bAF_NETLINK\b/);
  const serve = await serveRestricted(families, ['--workers', '2']);
  try {
    assert.deepEqual(serve.warnings, [], 'no warnings: the interfaces are listed');
    await connectRoundTrip(serve.port);
    await udpRoundTrip(serve.port);
  } finally {
    assert.equal(await serve.stop(), 0, 'SIGTERM ends it cleanly');
  }
});

test('without AF_NETLINK serve warns and takes its listen addresses as its own', async () => {
  requireSeccomp();
  const serve = await serveRestricted('AF_INET AF_INET6 AF_UNIX', ['--workers', '1']);
  try {
    assert.equal(serve.warnings.length, 1, JSON.stringify(serve.warnings));
    const warning = serve.warnings[0]!;
    assert.match(String(warning.msg), /^cannot list the network interfaces: only the listen addresses count/);
    assert.deepEqual(warning.ownAddresses, ['127.0.0.1']);
    await connectRoundTrip(serve.port);
    await udpRoundTrip(serve.port);
  } finally {
    assert.equal(await serve.stop(), 0);
  }
});
