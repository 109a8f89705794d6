import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { listenPorts, startCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startEcho } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

const isListening = (line: Record<string, unknown>): boolean => typeof line.msg === 'string' && line.msg.includes('listening on');

describe('hot reload', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-reload-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('new rules apply to new requests while live TCP and UDP sessions carry on; a bad config is refused', async () => {
    const tcp = await startEcho();
    const udpA = await startUdpEcho();
    const udpB = await startUdpEcho();
    const config = join(dir, 'live.yaml');
    const pidFile = join(dir, 'socksgate.pid');
    const base = `listen: ["127.0.0.1:0"]\nallowLoopbackTargets: true\npidFile: ${pidFile}\nlog: { format: json }\n`;
    await writeFile(config, `${base}rules: []\n`);
    const cli = startCli(['serve', '--config', config]);
    try {
      const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
      assert.equal((await readFile(pidFile, 'utf8')).trim(), String(cli.child.pid));
      // A live TCP relay and a live UDP association.
      const relay = await Peer.connect(port);
      await handshake(relay);
      relay.write(request(1, '127.0.0.1', tcp.port));
      assert.equal((await readReply(relay)).code, 0);
      const udp = await openAssociation(port);
      await udp.sendTo('127.0.0.1', udpA.port, Buffer.from('before'));
      assert.equal(unwrap((await udp.udp.receive()).data).data.toString(), 'before');

      await writeFile(
        config,
        `${base}rules:\n  - { name: no-new-tcp, action: deny, commands: [connect], ports: [${tcp.port}] }\n  - { name: no-b, action: deny, commands: [udp], ports: [${udpB.port}] }\n`,
      );
      const reloader = startCli(['reload', '--pid-file', pidFile]);
      assert.equal(await reloader.exited(), 0, reloader.stderr);
      await cli.waitForLine((l) => l.msg === 'configuration reloaded');

      // Live sessions are untouched.
      relay.write('still relaying');
      assert.equal((await relay.read(14)).toString(), 'still relaying');
      await udp.sendTo('127.0.0.1', udpA.port, Buffer.from('after'));
      assert.equal(unwrap((await udp.udp.receive()).data).data.toString(), 'after');
      // New decisions follow the new rules.
      await udp.sendTo('127.0.0.1', udpB.port, Buffer.from('to b'));
      await cli.waitForLine((l) => l.msg === 'denied by policy' && l.rule === `rule 2 "no-b": deny command udp, port ${udpB.port}`);
      assert.equal(udpB.received(), 0);
      const refused = await Peer.connect(port);
      await handshake(refused);
      refused.write(request(1, '127.0.0.1', tcp.port));
      assert.equal((await readReply(refused)).code, 0x02);
      refused.destroy();

      // A broken config is refused, and the one in force stays.
      await writeFile(config, `${base}rules:\n  - { action: maybe }\n`);
      cli.child.kill('SIGHUP');
      const refusal = await cli.waitForLine((l) => l.msg === 'reload refused: the configuration in force stays');
      assert.match(String(refusal.reason), /rules\[0\]\.action in .*live.yaml: got "maybe"/);
      relay.write('and still');
      assert.equal((await relay.read(9)).toString(), 'and still');
      const stillRefused = await Peer.connect(port);
      await handshake(stillRefused);
      stillRefused.write(request(1, '127.0.0.1', tcp.port));
      assert.equal((await readReply(stillRefused)).code, 0x02);
      stillRefused.destroy();
      relay.destroy();
      udp.close();
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
      udpA.close();
      udpB.close();
      await tcp.close();
    }
    await assert.rejects(readFile(pidFile), { code: 'ENOENT' }, 'the pid file is removed on exit');
  });

  test('watch: a changed users file is picked up without a signal', async () => {
    const users = join(dir, 'users.txt');
    const add = async (user: string, password: string): Promise<void> => {
      const cli = startCli(['passwd', '--file', users, user], `${password}\n`);
      assert.equal(await cli.exited(), 0);
    };
    await add('first', 'one');
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--users', users, '--watch', '--log-format', 'json']);
    try {
      const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
      await add('second', 'two');
      await cli.waitForLine((l) => l.msg === 'configuration reloaded' && l.why === 'file changed');
      const peer = await Peer.connect(port);
      await handshake(peer, { user: 'second', pass: 'two' });
      peer.destroy();
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
    }
  });

  test('a reload that changes limits.store or limits.claimTtl says a restart applies them, and keeps the store in force', async () => {
    const config = join(dir, 'store.yaml');
    const base = 'listen: ["127.0.0.1:0"]\nworkers: 2\nallowLoopbackTargets: true\nlog: { format: json }\n';
    await writeFile(config, `${base}limits: { store: local, sessionsPerClient: 1 }\n`);
    const echo = await startEcho();
    const cli = startCli(['serve', '--config', config]);
    try {
      const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
      // Port 1 on loopback answers nothing: had the reload switched stores, the next session would meet it.
      await writeFile(config, `${base}limits: { store: "redis://127.0.0.1:1", claimTtl: 30s, sessionsPerClient: 2 }\n`);
      cli.child.kill('SIGHUP');
      const reloaded = await cli.waitForLine((l) => l.msg === 'configuration reloaded');
      assert.deepEqual(reloaded.needsRestart, ['limits.store', 'limits.claimTtl']);
      // The rest of the reload applies (two sessions per client now), counted by the local store across both workers.
      const peers = [await Peer.connect(port), await Peer.connect(port), await Peer.connect(port)];
      const codes: number[] = [];
      for (const peer of peers) {
        await handshake(peer);
        peer.write(request(1, '127.0.0.1', echo.port));
        codes.push((await readReply(peer)).code);
      }
      assert.deepEqual(codes, [0, 0, 0x01], 'the third session is over the cap');
      assert.equal(cli.lines.some((l) => /redis/i.test(String(l.msg)) && l.level !== undefined && Number(l.level) >= 40), false, 'no store error: Redis was never dialled');
      for (const peer of peers) peer.destroy();
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
      await echo.close();
    }
  });

  test('reload without a running server says what to do', async () => {
    const cli = startCli(['reload', '--pid-file', join(dir, 'absent.pid')]);
    assert.equal(await cli.exited(), 2);
    assert.match(cli.stderr, /cannot read .*absent.pid \(ENOENT\): is the server running with --pid-file/);
  });
});

