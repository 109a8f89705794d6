import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { AdminServer } from '../../src/observe/admin.js';
import { startSocks } from '../helpers/servers.js';
import { openAssociation, startUdpEcho } from '../helpers/udp.js';

const CHROMIUM = '/usr/bin/chromium';

test('the status page in headless Chromium shows a live association, then shows it gone', async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install it with: apt-get install -y chromium`);
  const socks = await startSocks();
  const admin = new AdminServer(socks.server);
  const { port } = await admin.listen('127.0.0.1', 0);
  const echo = await startUdpEcho();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    // Playwright gives the browser a fresh profile of its own; these keep it off the network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/status`);
    await page.waitForSelector('#totals .card', { timeout: 10_000 });
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
