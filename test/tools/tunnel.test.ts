import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { createTunnel } from '../../src/tools/tunnel.js';
import { PYSOCKS_UDP_ECHO, runPySocks } from '../helpers/python.js';
import { requireProgram, startDnsmasq, startSocks } from '../helpers/servers.js';
import { dnsAnswers, dnsQuery, startUdpEcho } from '../helpers/udp.js';

test('socksgate tunnel: PySocks UDP and curl CONNECT through the tunnel; the UDP reaches the server only as UDP over TCP', async () => {
  const dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'], 'answer.test': ['127.0.0.42'] });
  const echo = await startUdpEcho();
  const server = await startSocks({ dnsServers: [dns.server] });
  const tunnel = createTunnel({ listen: { host: '127.0.0.1', port: 0 }, server: `socks5://127.0.0.1:${server.port}`, udpOverTcp: true });
  const [bound] = await tunnel.listen();
  const http = createServer((_req, res) => res.end('through the tunnel'));
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  try {
    const query = dnsQuery('answer.test', 0x0101);
    const result = await runPySocks(PYSOCKS_UDP_ECHO, [String(bound!.port), String(echo.port), String(dns.port), query.toString('hex')]);
    assert.equal(result.code, 0, result.stderr);
    const m = /^OK (\d+) (\d+) ([0-9a-f]+)$/.exec(result.stdout.trim());
    assert.ok(m, result.stdout);
    assert.equal(Number(m[1]), 6, 'six echo sizes up to 60000 bytes, byte-exact');
    assert.deepEqual(dnsAnswers(Buffer.from(m[3]!, 'hex')).addresses, ['127.0.0.42']);
    // The server saw UDP over TCP sessions (one per flow) and no UDP ASSOCIATE at all.
    assert.equal(server.server.stats.sessionsEnded.udp ?? 0, 0);
    assert.ok(server.server.udpStats.associationsOpened >= 3, `flows: ${server.server.udpStats.associationsOpened}`);
    assert.ok(server.server.snapshot().every((s) => s.command === 'udp-over-tcp'));

    const curl = requireProgram('curl', 'curl');
    const body = await new Promise<string>((resolve, reject) => {
      const child = spawn(curl, ['--silent', '--show-error', '--max-time', '10', '-x', `socks5h://127.0.0.1:${bound!.port}`, `http://echo.test:${(http.address() as { port: number }).port}/`]);
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`curl exited ${code}`))));
    });
    assert.equal(body, 'through the tunnel');
  } finally {
    http.close();
    echo.close();
    await tunnel.close();
    await Promise.all([server.close(), dns.close()]);
  }
});

test('socksgate tunnel on the command line', async () => {
  const { startCli, listenPorts } = await import('../helpers/cli.js');
  const { associate } = await import('socksgate-client');
  const echo = await startUdpEcho();
  const server = await startSocks();
  const cli = startCli(['tunnel', '--listen', '127.0.0.1:0', '--server', `socks5://127.0.0.1:${server.port}`, '--udp-over-tcp', '--log-format', 'json']);
  try {
    const port = listenPorts(await cli.waitForLine((l) => String(l.msg).includes('tunnel listening'))).get('127.0.0.1')!;
    const udp = await associate({ proxy: `socks5://127.0.0.1:${port}` });
    const reply = new Promise<Buffer>((resolve) => udp.once('message', ({ payload }) => resolve(payload)));
    await udp.send(Buffer.from('via the tunnel command'), '127.0.0.1', echo.port);
    assert.equal((await reply).toString(), 'via the tunnel command');
    udp.close();
    const open = startCli(['tunnel', '--listen', '0.0.0.0:0', '--server', `socks5://127.0.0.1:${server.port}`]);
    assert.equal(await open.exited(), 2);
    assert.match(open.stderr, /open proxy/);
  } finally {
    assert.equal(await cli.stop(), 0, cli.output());
    echo.close();
    await server.close();
  }
});
