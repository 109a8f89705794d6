import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OPTIONS } from '../../src/config/options.js';
import { CLI, listenPorts, startCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { freeTcpUdpPort, startEcho } from '../helpers/servers.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';

const isListening = (line: Record<string, unknown>): boolean => typeof line.msg === 'string' && line.msg.includes('listening on');

describe('socksgate command line', () => {
  let dir: string;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-cli-'));
    echo = await startEcho();
  });
  after(async () => {
    await echo.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('serve: one line says where it listens (IPv4 and IPv6), it relays, SIGTERM exits 0', async () => {
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--listen', '[::1]:0', '--log-format', 'json', '--allow-loopback-targets']);
    try {
      const line = await cli.waitForLine(isListening);
      const ports = listenPorts(line);
      assert.equal(ports.size, 2);
      for (const [host, port] of ports) {
        const peer = await Peer.connect(port, host);
        await handshake(peer);
        peer.write(request(1, '127.0.0.1', echo.port));
        assert.equal((await readReply(peer)).code, 0);
        peer.write(`via ${host}`);
        assert.equal((await peer.read(4 + host.length)).toString(), `via ${host}`);
        peer.destroy();
      }
      // With workers, the two sessions may end in either order: find the IPv4 one by its byte count.
      const end = await cli.waitForLine((l) => l.msg === 'session end' && l.result === 'ok' && l.command === 'connect' && l.up === 13);
      assert.equal(end.target, `127.0.0.1:${echo.port}`);
      assert.equal(end.down, 13);
      assert.equal(typeof end.ms, 'number');
      const v6 = await cli.waitForLine((l) => l.msg === 'session end' && l.result === 'ok' && l.up === 7);
      assert.equal(v6.down, 7);
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });

  test('a shutdown that fails exits 1 with one log line that says why', async () => {
    const pidFile = join(dir, 'undeletable.pid');
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--pid-file', pidFile, '--log-format', 'json']);
    await cli.waitForLine(isListening);
    // A directory where the pid file was: removing it on exit fails (EISDIR).
    await rm(pidFile);
    await mkdir(pidFile);
    assert.equal(await cli.stop(), 1, cli.output());
    const reason = cli.lines.find((l) => l.level === 50);
    assert.ok(reason, `no error line before exit 1: ${cli.output()}`);
    assert.match(String(reason.msg), /^shutdown failed: .*directory.*; exiting with code 1$/);
    assert.equal(reason.signal, 'SIGTERM');
    await rm(pidFile, { recursive: true });
  });

  test('passwd creates and updates users; serve --users requires them', async () => {
    const users = join(dir, 'users.txt');
    for (const [user, password] of [['alice', 'first'], ['bob', 'other'], ['alice', 'second']]) {
      const added = startCli(['passwd', '--file', users, user!], `${password}\n`);
      assert.equal(await added.exited(), 0, added.stderr);
    }
    assert.match(await readFile(users, 'utf8'), /^alice:\$scrypt\$.*\nbob:\$scrypt\$/);
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--users', users, '--log-format', 'json']);
    try {
      const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
      const good = await Peer.connect(port);
      await handshake(good, { user: 'alice', pass: 'second' });
      good.destroy();
      const bad = await Peer.connect(port);
      bad.write(Buffer.concat([greeting(2), userPass('alice', 'first')]));
      assert.deepEqual(await bad.read(4), Buffer.from([5, 2, 1, 1]));
      await bad.closed();
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });

  test('a config file works and a bad one exits 2 naming the key', async () => {
    const good = join(dir, 'good.yaml');
    await writeFile(good, 'listen: ["127.0.0.1:0"]\nlog:\n  format: json\n  level: debug\n');
    const cli = startCli(['serve', '--config', good]);
    const listening = await cli.waitForLine(isListening).catch((error: Error) => error);
    const code = await cli.stop();
    if (listening instanceof Error) throw listening;
    assert.equal(code, 0, cli.stderr);
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'listen: ["127.0.0.1:0"]\nmaxClients: -3\n');
    const failed = startCli(['serve', '--config', bad]);
    assert.equal(await failed.exited(), 2);
    assert.match(failed.stderr, /maxClients in .*bad.yaml: got -3/);
  });

  test('bad flags and refused set-ups exit non-zero with the reason on stderr', async () => {
    const unknown = startCli(['serve', '--no-such-flag']);
    assert.notEqual(await unknown.exited(), 0);
    assert.match(unknown.stderr, /unknown option '--no-such-flag'/);
    const open = startCli(['serve', '--listen', '0.0.0.0:0']);
    assert.equal(await open.exited(), 2);
    assert.match(open.stderr, /open proxy; add --users FILE/);
    const busy = startCli(['serve', '--listen', `127.0.0.1:${echo.port}`]);
    assert.equal(await busy.exited(), 1);
    assert.match(busy.stderr, /EADDRINUSE.*pick another --listen port/);
    const badPassword = startCli(['passwd', '--file', join(dir, 'x.txt'), 'carol'], '\n');
    assert.equal(await badPassword.exited(), 2);
    assert.match(badPassword.stderr, /password must be 1 to 255 bytes/);
  });

  test('serve --udp-port: TCP and UDP on one port, as behind a load balancer', async () => {
    const port = await freeTcpUdpPort();
    const udpEcho = await startUdpEcho();
    const cli = startCli(['serve', '--listen', `127.0.0.1:${port}`, '--udp-port', String(port), '--udp-advertise', '127.0.0.1', '--log-format', 'json', '--allow-loopback-targets']);
    try {
      await cli.waitForLine(isListening);
      const a = await openAssociation(port);
      assert.deepEqual([a.reply.host, a.reply.port], ['127.0.0.1', port]);
      await a.sendTo('127.0.0.1', udpEcho.port, Buffer.from('one port for all'));
      assert.equal(unwrap((await a.udp.receive()).data).data.toString(), 'one port for all');
      a.close();
      const end = await cli.waitForLine((l) => l.msg === 'session end' && l.command === 'udp');
      assert.deepEqual([end.up, end.down, end.result], [16, 16, 'ok']);
    } finally {
      udpEcho.close();
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });

  test('--help explains every option', () => {
    const help = spawnSync(process.execPath, [CLI, 'serve', '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0);
    for (const option of OPTIONS) assert.ok(help.stdout.includes(option.flag), `${option.flag} in serve --help`);
    const top = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    assert.match(top.stdout, /serve \[options\]/);
    assert.match(top.stdout, /passwd \[options\] <USER>/);
  });

  test('npx socksgate runs the installed package (the README contract), and rebuilds nothing under the suite', () => {
    // The first npx in a project path installs the project for itself, running its prepare and install
    // scripts: dist/ and the native helper were rebuilt under the running suite. A server started
    // meanwhile found no helper and exited 1 at start-up (SOCKSGATE_NATIVE=1), which other tests
    // reported as a failed shutdown. The contract is that the bin resolves and runs, so no scripts.
    const root = join(CLI, '../../..');
    const built = [join(root, 'dist', 'cli.js'), join(root, 'native', 'build', 'Release', 'socksgate_native.node')].filter((f) => existsSync(f));
    const before = built.map((f) => `${f} ${statSync(f).ino} ${statSync(f).mtimeMs}`);
    const result = spawnSync('npx', ['--no-install', 'socksgate', 'serve', '--help'], {
      encoding: 'utf8',
      cwd: root,
      env: { ...process.env, npm_config_ignore_scripts: 'true' },
    });
    assert.equal(result.status, 0, `${result.stderr} (npm ci builds dist/; run it first)`);
    assert.match(result.stdout, /--listen <HOST:PORT>/);
    const after = built.map((f) => (existsSync(f) ? `${f} ${statSync(f).ino} ${statSync(f).mtimeMs}` : `${f} gone`));
    assert.deepEqual(after, before, 'npx ran the package scripts: it rebuilt files other tests are using');
  });
});
