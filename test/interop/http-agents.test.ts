// HTTP through socksgate with the agents Node developers already use, as real clients: undici's
// Socks5ProxyAgent (undici 7, the line that runs on Node 20) with undici's fetch, socks-proxy-agent with
// http.get/https.get, and the docs recipe that puts socksgate-client's connect() under an undici Agent
// (through a chain). The targets are an http and an https server on loopback, named web.test, a name
// only the proxy's DNS server knows; the https certificate is made by openssl for this run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet, createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import { get as httpsGet, createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { SocksProxyAgent } from 'socks-proxy-agent';
import { Socks5ProxyAgent, fetch, type Dispatcher } from 'undici';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { startCountingDns, type CountingDns } from '../helpers/dns-counter.js';
import { requireProgram, startSocks } from '../helpers/servers.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** A self-signed certificate for web.test and 127.0.0.1, made by openssl in `dir`. */
function makeCertificate(dir: string): { key: Buffer; cert: Buffer } {
  const openssl = requireProgram('openssl', 'openssl');
  const run = spawnSync(openssl, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=web.test', '-addext', 'subjectAltName=DNS:web.test,IP:127.0.0.1'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function body(response: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (c: Buffer) => chunks.push(c));
    response.on('end', () => resolve(Buffer.concat(chunks)));
    response.on('error', reject);
  });
}

describe('HTTP agents through socksgate', () => {
  const page = randomBytes(150_000);
  let dir: string;
  let ca: Buffer;
  let dns: CountingDns;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  let hop: Awaited<ReturnType<typeof startSocks>>;
  let http: Server;
  let https: Server;
  let httpPort: number;
  let httpsPort: number;
  const served: string[] = [];
  const proxyUrl = (scheme: string): string => `${scheme}://agent:agent-pass@127.0.0.1:${socks.port}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'socksgate-agents-'));
    const { key, cert } = makeCertificate(dir);
    ca = cert;
    const handler: RequestListener = (request, response) => {
      served.push(`${request.socket.constructor.name === 'TLSSocket' ? 'https' : 'http'} ${request.headers.host} ${request.url}`);
      response.writeHead(200, { 'content-type': 'application/octet-stream' });
      response.end(page);
    };
    http = createHttpServer(handler);
    https = createHttpsServer({ key, cert }, handler);
    httpPort = await listen(http);
    httpsPort = await listen(https);
    dns = await startCountingDns((name) => (name === 'web.test' ? '127.0.0.1' : undefined));
    const users = UserStore.fromEntries([['agent', await hashPassword(Buffer.from('agent-pass'), 10)]]);
    socks = await startSocks({ dnsServers: [dns.server], users });
    hop = await startSocks({ dnsServers: [dns.server] });
  });
  after(async () => {
    http.closeAllConnections();
    https.closeAllConnections();
    await Promise.all([socks.close(), hop.close(), dns.close(), new Promise((r) => http.close(r)), new Promise((r) => https.close(r))]);
    rmSync(dir, { recursive: true, force: true });
  });

  async function viaFetch(dispatcher: Dispatcher, url: string): Promise<void> {
    const before = served.length;
    const response = await fetch(url, { dispatcher });
    assert.equal(response.status, 200);
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(page), `${url}: the body came back byte for byte`);
    assert.deepEqual(served.slice(before), [`${url.slice(0, url.indexOf(':'))} ${new URL(url).host} ${new URL(url).pathname}`]);
  }

  test("undici's Socks5ProxyAgent: fetch over http and https, names resolved by the proxy", async () => {
    const asked = dns.asked('web.test');
    const plain = new Socks5ProxyAgent(proxyUrl('socks5'));
    // requestTls (TLS options towards the target) is read by undici 7's code but missing from its types.
    const secure = new Socks5ProxyAgent(proxyUrl('socks5'), { requestTls: { ca } } as ConstructorParameters<typeof Socks5ProxyAgent>[1]);
    try {
      await viaFetch(plain, `http://web.test:${httpPort}/undici`);
      await viaFetch(secure, `https://web.test:${httpsPort}/undici-tls`);
    } finally {
      await Promise.all([plain.close(), secure.close()]);
    }
    assert.ok(dns.asked('web.test') > asked, "the proxy's DNS server was asked for web.test");
    await assert.rejects(
      fetch(`http://web.test:${httpPort}/`, { dispatcher: new Socks5ProxyAgent(`socks5://agent:wrong@127.0.0.1:${socks.port}`) }),
      'a wrong password fails the request',
    );
  });

  test('socks-proxy-agent: http.get and https.get over socks5h://', async () => {
    const agent = new SocksProxyAgent(proxyUrl('socks5h'));
    try {
      for (const [get, url, options] of [
        [httpGet, `http://web.test:${httpPort}/spa`, {}],
        [httpsGet, `https://web.test:${httpsPort}/spa-tls`, { ca }],
      ] as const) {
        const before = served.length;
        const response = await new Promise<IncomingMessage>((resolve, reject) => get(url, { agent, ...options }, resolve).on('error', reject));
        assert.equal(response.statusCode, 200);
        assert.ok((await body(response)).equals(page), `${url}: the body came back byte for byte`);
        assert.equal(served.length, before + 1);
      }
    } finally {
      agent.destroy();
    }
  });

  test("the docs recipe: socksgate-client's connect() under an undici Agent, through a chain", async () => {
    const docs = readFileSync(join(ROOT, 'docs', 'client.md'), 'utf8');
    const block = /### Recipe: socksgate's `connect\(\)` as an undici connector[\s\S]*?```js\n([\s\S]*?)```/.exec(docs);
    assert.ok(block, 'the recipe block in docs/client.md');
    const file = join(ROOT, 'build', 'undici-connector-recipe.mjs');
    writeFileSync(file, block[1]!);
    const { socksDispatcher } = (await import(file)) as { socksDispatcher: (proxy: unknown, tls?: object) => Dispatcher & { close(): Promise<void> } };
    const chain = [`socks5h://127.0.0.1:${hop.port}`, proxyUrl('socks5h')];
    const dispatcher = socksDispatcher(chain, { ca });
    try {
      await viaFetch(dispatcher, `http://web.test:${httpPort}/recipe`);
      await viaFetch(dispatcher, `https://web.test:${httpsPort}/recipe-tls`);
      assert.equal(hop.server.sessionsByCommand()['connect'], 2, 'both connections pass the first hop');
    } finally {
      await dispatcher.close();
    }
  });
});
