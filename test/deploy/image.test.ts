// The container image of deploy/Dockerfile, built and run for real (see helpers/container.ts): it
// relays a CONNECT and a UDP round trip on the native helper, runs as a user other than root, and
// drains on SIGTERM (a live session goes on, new clients are refused, exit 0 when it ends).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenPorts } from '../helpers/cli.js';
import { buildImage, imageSize, runContainer } from '../helpers/container.js';
import { Peer } from '../helpers/peer.js';
import { startEcho } from '../helpers/servers.js';
import { connectRoundTrip, getJson, udpRoundTrip } from '../helpers/ship.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

test('the image serves on the native helper as non-root and drains on SIGTERM', { timeout: 1_800_000 }, async (t) => {
  buildImage();
  t.diagnostic(`image size: ${(imageSize() / 1e6).toFixed(1)} MB`);
  const container = runContainer([], ['serve', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--allow-loopback-targets', '--workers', '1', '--shutdown-timeout', '60', '--log-format', 'json']);
  const echo = await startEcho();
  try {
    const adminLine = await container.waitForLine((l) => typeof l.admin === 'string', 60_000);
    const adminPort = Number(/:(\d+)$/.exec(String(adminLine.admin))![1]);
    const listening = await container.waitForLine((l) => Array.isArray(l.listen), 60_000);
    const port = listenPorts(listening).get('127.0.0.1')!;

    const status = await getJson(adminPort, '/api/status');
    assert.equal(status.status, 200);
    assert.match(String(status.body.udpIo), /^native \(/, `the native helper is loaded: ${String(status.body.udpIo)}`);

    const uid = /^Uid:\s+(\d+)/m.exec(container.exec(['cat', '/proc/1/status']))?.[1];
    assert.equal(uid, '1000', 'socksgate runs as the image\'s user node (uid 1000), not root');

    await connectRoundTrip(port);
    await udpRoundTrip(port);

    // A session that is open when SIGTERM comes goes on until it ends; no new client gets in.
    const relay = await Peer.connect(port);
    await handshake(relay);
    relay.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(relay)).code, 0);
    container.signal('TERM');
    const stopping = await container.waitForLine((l) => l.msg === 'shutting down', 30_000);
    assert.equal(stopping.sessions, 1, 'one session drains');
    assert.equal((await getJson(adminPort, '/readyz')).status, 503, 'not ready while draining');
    await assert.rejects(Peer.connect(port), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 3; i++) {
      relay.write(`drain ${i}`);
      assert.equal((await relay.read(7)).toString(), `drain ${i}`);
    }
    relay.end();
    await relay.readToEnd();
    assert.equal(await container.exited(30_000), 0, 'exit 0 once the last session ended');
  } finally {
    container.remove();
    await echo.close();
  }
});
