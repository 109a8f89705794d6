import assert from 'node:assert/strict';
import { test } from 'node:test';
import { listenPorts, startCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startEcho } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

const isListening = (line: Record<string, unknown>): boolean => typeof line.msg === 'string' && line.msg.includes('socksgate') && line.msg.includes('listening on');

test('SIGTERM: not ready at once, no new clients, in-flight CONNECT data keeps flowing, exit 0 when it ends', async () => {
  const echo = await startEcho();
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--allow-loopback-targets', '--shutdown-timeout', '20', '--log-format', 'json']);
  try {
    const adminLine = await cli.waitForLine((l) => typeof l.admin === 'string');
    const admin = `http://${String(adminLine.admin)}`;
    const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
    assert.equal((await fetch(`${admin}/readyz`)).status, 200);
    const relay = await Peer.connect(port);
    await handshake(relay);
    relay.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(relay)).code, 0);

    cli.child.kill('SIGTERM');
    await cli.waitForLine((l) => l.msg === 'shutting down');
    assert.equal((await fetch(`${admin}/readyz`)).status, 503);
    await assert.rejects(Peer.connect(port), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 5; i++) {
      relay.write(`chunk ${i}`);
      assert.equal((await relay.read(7)).toString(), `chunk ${i}`);
    }
    relay.end();
    await relay.readToEnd();
    assert.equal(await cli.exited(10_000), 0);
    assert.ok(!cli.lines.some((l) => l.msg === 'shutdown deadline reached: closed the sessions still open'));
  } finally {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
    await echo.close();
  }
});

test('SIGTERM: sessions still open at the shutdown deadline are closed, and the exit is still 0', async () => {
  const echo = await startEcho();
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--allow-loopback-targets', '--shutdown-timeout', '0.5', '--log-format', 'json']);
  try {
    const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
    const relay = await Peer.connect(port);
    await handshake(relay);
    relay.write(request(1, '127.0.0.1', echo.port));
    await readReply(relay);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited(10_000), 0);
    const cut = cli.lines.find((l) => l.msg === 'shutdown deadline reached: closed the sessions still open');
    assert.equal(cut?.sessions, 1);
    await relay.closed();
  } finally {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
    await echo.close();
  }
});
