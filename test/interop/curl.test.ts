import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { requireProgram, startDnsmasq, startSocks } from '../helpers/servers.js';

interface CurlResult {
  readonly code: number;
  readonly body: Buffer;
  readonly stderr: string;
}

function curl(args: string[]): Promise<CurlResult> {
  const binary = requireProgram('curl', 'curl');
  return new Promise((resolve) => {
    const child = spawn(binary, ['--silent', '--show-error', '--max-time', '10', '--noproxy', '', ...args]);
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, body: Buffer.concat(out), stderr }));
  });
}

async function httpServer(host: string, body: Buffer): Promise<{ server: Server; port: number; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.headers.host}${req.url}`);
    res.setHeader('content-type', 'application/octet-stream');
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as { port: number }).port, requests };
}

describe('curl (Debian) through socksgate', () => {
  const body = randomBytes(200_000);
  let http4: Awaited<ReturnType<typeof httpServer>>;
  let http6: Awaited<ReturnType<typeof httpServer>>;
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let open: Awaited<ReturnType<typeof startSocks>>;
  let guarded: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    http4 = await httpServer('127.0.0.1', body);
    http6 = await httpServer('::1', body);
    dns = await startDnsmasq({ 'web.test': ['127.0.0.1'], 'web6.test': ['::1'] });
    open = await startSocks({ dnsServers: [dns.server] });
    guarded = await startSocks({ dnsServers: [dns.server], users: UserStore.fromEntries([['carol', await hashPassword(Buffer.from('s3cret pass'), 10)]]) });
  });
  after(async () => {
    http4.server.close();
    http6.server.close();
    await Promise.all([open.close(), guarded.close(), dns.close()]);
  });

  test('socks5:// (curl resolves) to an IPv4 and an IPv6 target', async () => {
    for (const url of [`http://127.0.0.1:${http4.port}/four`, `http://[::1]:${http6.port}/six`]) {
      const result = await curl(['-x', `socks5://127.0.0.1:${open.port}`, url]);
      assert.equal(result.code, 0, result.stderr);
      assert.ok(result.body.equals(body), `${url}: ${result.body.length} bytes`);
    }
  });

  test('socks5h:// (the proxy resolves the name through its DNS servers)', async () => {
    for (const [name, http] of [['web.test', http4], ['web6.test', http6]] as const) {
      const result = await curl(['-x', `socks5h://127.0.0.1:${open.port}`, `http://${name}:${http.port}/by-name`]);
      assert.equal(result.code, 0, result.stderr);
      assert.ok(result.body.equals(body));
      assert.equal(http.requests.at(-1), `GET ${name}:${http.port}/by-name`);
    }
  });

  test('socks5h:// with username and password', async () => {
    const result = await curl(['-x', `socks5h://carol:s3cret%20pass@127.0.0.1:${guarded.port}`, `http://web.test:${http4.port}/auth`]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.body.equals(body));
    assert.equal(http4.requests.at(-1), `GET web.test:${http4.port}/auth`);
  });

  test('a wrong password is rejected and nothing reaches the target', async () => {
    const before = http4.requests.length;
    const wrong = await curl(['-x', `socks5h://carol:guess@127.0.0.1:${guarded.port}`, `http://web.test:${http4.port}/nope`]);
    assert.equal(wrong.code, 97, `curl exit code for a SOCKS failure; stderr: ${wrong.stderr}`);
    assert.match(wrong.stderr, /User was rejected by the SOCKS5 server \(1 1\)/);
    const none = await curl(['-x', `socks5h://127.0.0.1:${guarded.port}`, `http://web.test:${http4.port}/nope`]);
    assert.equal(none.code, 97, none.stderr);
    assert.match(none.stderr, /No authentication method was acceptable/);
    assert.equal(http4.requests.length, before);
  });

  test('an unreachable target gives curl the SOCKS reply code', async () => {
    const result = await curl(['-x', `socks5h://127.0.0.1:${open.port}`, 'http://missing.test:9/']);
    assert.equal(result.code, 97);
    assert.match(result.stderr, /\(4\)|host unreachable/i);
  });
});
