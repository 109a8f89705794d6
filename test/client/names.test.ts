// Where destination names are resolved. socks5h:// and proxy options without `remoteDns` must send
// names to the proxy: this host asks no resolver at all. The client's local resolver here is a
// recording one backed by a counting DNS server; the proxy has its own counting DNS server. A
// regression that looked a name up locally shows in both counts (or fails to connect at all).
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { associate, bind, connect, type LookupFunction } from 'socksgate-client';
import { startCountingDns, type CountingDns } from '../helpers/dns-counter.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { startUdpEcho } from '../helpers/udp.js';
import type { Socket } from 'node:net';

async function echoes(socket: Socket, size = 4096): Promise<void> {
  const payload = randomBytes(size);
  const chunks: Buffer[] = [];
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= size) resolve();
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed after ${received} of ${size} bytes`)));
  });
  socket.write(payload);
  await done;
  socket.destroy();
  assert.ok(Buffer.concat(chunks).equals(payload), 'the echo came back byte for byte');
}

describe('names go to the proxy unless the proxy URL says socks5://', () => {
  let proxyDns: CountingDns;
  let localDns: CountingDns;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let hop: Awaited<ReturnType<typeof startSocks>>;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  const localLookups: string[] = [];
  // A recording resolver: every local lookup is listed, then asked of the local counting server.
  const lookup: LookupFunction = (hostname, _options, callback) => {
    localLookups.push(hostname);
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([localDns.server]);
    resolver.resolve4(hostname, (error, addresses) => callback(error, addresses?.[0] ?? '', 4));
  };

  before(async () => {
    // Every name under .test but absent.test is 127.0.0.1; each test uses names of its own, so the
    // proxy's DNS cache cannot hide a question.
    const table = (name: string): string | undefined => (name.endsWith('.test') && name !== 'absent.test' ? '127.0.0.1' : undefined);
    proxyDns = await startCountingDns(table);
    localDns = await startCountingDns(table);
    echo = await startEcho();
    udpEcho = await startUdpEcho();
    socks = await startSocks({ dnsServers: [proxyDns.server] });
    hop = await startSocks({ dnsServers: [proxyDns.server] });
  });
  after(async () => {
    await Promise.all([socks.close(), hop.close(), echo.close(), proxyDns.close(), localDns.close()]);
    udpEcho.close();
  });

  function counts(): { local: number; localQueries: number; proxy: number } {
    return { local: localLookups.length, localQueries: localDns.questions.length, proxy: proxyDns.questions.length };
  }

  async function expectRemote(run: () => Promise<void>, proxyQuestions: 'some' | 'none' = 'some'): Promise<void> {
    const before = counts();
    await run();
    const now = counts();
    assert.equal(now.local - before.local, 0, `no local lookup (${localLookups.slice(before.local).join(', ')})`);
    assert.equal(now.localQueries - before.localQueries, 0, 'the local DNS server was not asked');
    if (proxyQuestions === 'some') assert.ok(now.proxy > before.proxy, 'the proxy resolved the name');
  }

  test('proxy options { host, port } send the name to the proxy', async () => {
    await expectRemote(async () => echoes(await connect({ proxy: { host: '127.0.0.1', port: socks.port }, host: 'options.test', port: echo.port, lookup })));
  });

  test('socks5h:// sends the name to the proxy', async () => {
    await expectRemote(async () => echoes(await connect({ proxy: `socks5h://127.0.0.1:${socks.port}`, host: 'socks5h.test', port: echo.port, lookup })));
  });

  test('socks:// (no h, no 5) and remoteDns: true send the name to the proxy', async () => {
    await expectRemote(async () => echoes(await connect({ proxy: `socks://127.0.0.1:${socks.port}`, host: 'socks.test', port: echo.port, lookup })));
    await expectRemote(async () => echoes(await connect({ proxy: { host: '127.0.0.1', port: socks.port, remoteDns: true }, host: 'remotedns.test', port: echo.port, lookup })));
  });

  test('a chain sends the next hop and the target by name to the hop before', async () => {
    await expectRemote(async () =>
      echoes(await connect({ proxy: [{ host: '127.0.0.1', port: socks.port }, { host: 'hop.test', port: hop.port }], host: 'chained.test', port: echo.port, lookup })),
    );
    assert.ok(proxyDns.asked('hop.test') > 0, 'the first proxy resolved the second');
  });

  test('UDP ASSOCIATE sends datagram destinations by name to the proxy', async () => {
    await expectRemote(async () => {
      const udp = await associate({ proxy: { host: '127.0.0.1', port: socks.port }, lookup });
      try {
        const payload = randomBytes(512);
        const back = new Promise<Buffer>((resolve) => udp.once('message', (m) => resolve(m.payload)));
        await udp.send(payload, 'datagram.test', udpEcho.port);
        assert.ok((await back).equals(payload), 'the datagram came back byte for byte');
      } finally {
        udp.close();
      }
    });
  });

  test('BIND sends the expected host by name to the proxy', async () => {
    await expectRemote(async () => {
      const handle = await bind({ proxy: { host: '127.0.0.1', port: socks.port }, host: 'bind.test', lookup });
      handle.close();
    }, 'none');
  });

  test('socks5:// resolves here, with the lookup given, and sends the address', async () => {
    const before = counts();
    await echoes(await connect({ proxy: `socks5://127.0.0.1:${socks.port}`, host: 'local.test', port: echo.port, lookup }));
    assert.deepEqual(localLookups.slice(before.local), ['local.test'], 'one local lookup, of the target');
    assert.equal(localDns.asked('local.test'), 1, 'the local DNS server got the question');
    assert.equal(proxyDns.asked('local.test'), 0, 'the proxy got an address, not a name');
    await assert.rejects(connect({ proxy: { host: '127.0.0.1', port: socks.port, remoteDns: false }, host: 'absent.test', port: echo.port, lookup }), { code: 'ERR_DNS', message: /absent\.test.*socks5h/ });
  });
});
