import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { createGateway } from '../../src/gateway/gateway.js';
import { AdminServer } from '../../src/observe/admin.js';
import { Peer } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho } from '../helpers/udp.js';

const CHROMIUM = '/usr/bin/chromium';

function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install it with: apt-get install -y chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    // Playwright gives the browser a fresh profile of its own; these keep it off the network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

test('the status page in headless Chromium shows a live association, then shows it gone', async () => {
  const socks = await startSocks();
  const admin = new AdminServer(socks.server);
  const { port } = await admin.listen('127.0.0.1', 0);
  const echo = await startUdpEcho();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/status`);
    await page.waitForSelector('#totals .card', { timeout: 10_000 });
    assert.match((await page.locator('#io').textContent()) ?? '', /^UDP I\/O: (native|dgram)/);
    // Not a gateway, and no workers here: those sections stay hidden.
    assert.equal(await page.locator('#upstreams-section').isHidden(), true);
    assert.equal(await page.locator('#workers-section').isHidden(), true);
    const a = await openAssociation(socks.port);
    for (let i = 0; i < 3; i++) {
      await a.sendTo('127.0.0.1', echo.port, Buffer.from(`datagram ${i}`));
      await a.udp.receive();
    }
    const row = page.locator('#sessions tr[data-command="udp"]');
    await row.waitFor({ timeout: 10_000 });
    const cells = await row.locator('td').allTextContents();
    assert.match(cells[0]!, /^127\.0\.0\.1:\d+$/);
    assert.equal(cells[2], 'udp');
    assert.equal(cells[3], `127.0.0.1:${echo.port}`);
    assert.deepEqual([cells[4], cells[5]], ['3', '3']);
    a.close();
    await row.waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await page.locator('#sessions tbody tr').count(), 0);
    assert.match((await page.locator('#totals').textContent()) ?? '', /datagrams from clients3/);
    assert.equal(await page.locator('#chart-datagrams polyline').count(), 2);
  } finally {
    await browser.close();
    echo.close();
    await admin.close();
    await socks.close();
  }
});

test('in gateway mode the status page lists each upstream: in selection with its sessions, then out once its health checks fail', async () => {
  const upstream = await startSocks();
  const target = await startEcho();
  const gateway = createGateway(
    { listen: [{ host: '127.0.0.1', port: 0 }], connectTimeoutMs: 3000 },
    { upstreams: [`socks5://127.0.0.1:${upstream.port}`], healthIntervalMs: 100, healthTimeoutMs: 2000, healthFailures: 2 },
  );
  const [bound] = await gateway.listen();
  const admin = new AdminServer(gateway);
  const { port } = await admin.listen('127.0.0.1', 0);
  const browser = await launch();
  let client: Peer | null = null;
  let upstreamOpen = true;
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/status`);
    const row = page.locator(`#upstreams tr[data-upstream="127.0.0.1:${upstream.port}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#upstreams-section').isVisible(), true);

    client = await Peer.connect(bound!.port, '127.0.0.1');
    await handshake(client);
    client.write(request(1, '127.0.0.1', target.port));
    assert.equal((await readReply(client, 5000)).code, 0);
    // upstream, state, sessions now, sessions, failed health checks, failed dials, last health check
    await row.locator('td:nth-child(3):text-is("1")').waitFor({ timeout: 10_000 });
    let cells = await row.locator('td').allTextContents();
    assert.deepEqual(cells.slice(0, 6), [`127.0.0.1:${upstream.port}`, 'up', '1', '1', '0', '0']);
    assert.match(cells[6]!, /^\d+\.\d ms$/);

    client.destroy();
    client = null;
    await upstream.close();
    upstreamOpen = false;
    await row.locator('td:nth-child(2):text-is("out")').waitFor({ timeout: 10_000 });
    cells = await row.locator('td').allTextContents();
    assert.equal(cells[2], '0');
    assert.ok(Number(cells[4]) >= 2, `failed health checks: ${cells[4]}`);
  } finally {
    client?.destroy();
    await browser.close();
    await admin.close();
    await gateway.close();
    if (upstreamOpen) await upstream.close();
    await target.close();
  }
});
