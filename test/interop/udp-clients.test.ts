import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PYSOCKS_UDP_ECHO, runPySocks } from '../helpers/python.js';
import { SocksClient } from 'socks';
import { waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { UdpPeer, dnsAnswers, dnsQuery, startUdpEcho } from '../helpers/udp.js';



describe('third-party UDP clients through socksgate', () => {
  let dns: Awaited<ReturnType<typeof startDnsmasq>>;
  let echo: Awaited<ReturnType<typeof startUdpEcho>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    dns = await startDnsmasq({ 'echo.test': ['127.0.0.1'], 'answer.test': ['127.0.0.42'] });
    echo = await startUdpEcho();
    socks = await startSocks({ dnsServers: [dns.server] });
  });
  after(async () => {
    echo.close();
    await Promise.all([socks.close(), dns.close()]);
  });

  test('PySocks (python3-socks): byte-exact echo up to 60000 bytes, a name resolved by the proxy, a DNS query', async () => {
    const query = dnsQuery('answer.test', 0x4242);
    const result = await runPySocks(PYSOCKS_UDP_ECHO, [String(socks.port), String(echo.port), String(dns.port), query.toString('hex')]);
    assert.equal(result.code, 0, result.stderr);
    const m = /^OK (\d+) (\d+) ([0-9a-f]+)$/.exec(result.stdout.trim());
    assert.ok(m, result.stdout);
    assert.equal(Number(m[1]), 6);
    assert.equal(Number(m[2]), dns.port);
    assert.deepEqual(dnsAnswers(Buffer.from(m[3]!, 'hex')), { id: 0x4242, rcode: 0, addresses: ['127.0.0.42'] });
    await waitFor(() => socks.server.udpStats.activeAssociations === 0, 3000, 'the association to end with the script');
  });

  test('the socks npm client: associate, createUDPFrame / parseUDPFrame, echo and a DNS query', async () => {
    const udp = await UdpPeer.bind('127.0.0.1');
    // createConnection() is for CONNECT only; associate goes through the event API.
    const client = new SocksClient({ proxy: { host: '127.0.0.1', port: socks.port, type: 5 }, command: 'associate', destination: { host: '0.0.0.0', port: udp.port } });
    const { socket: control, remoteHost } = await new Promise<{ socket: import('node:net').Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
      client.on('established', resolve);
      client.on('error', reject);
      client.connect();
    });
    try {
      assert.equal(remoteHost!.host, '127.0.0.1');
      const payload = Buffer.from('through the socks package');
      await udp.send(SocksClient.createUDPFrame({ remoteHost: { host: '127.0.0.1', port: echo.port }, data: payload }), remoteHost!.port, remoteHost!.host);
      const echoed = SocksClient.parseUDPFrame((await udp.receive()).data);
      assert.deepEqual([echoed.remoteHost.host, echoed.remoteHost.port, echoed.frameNumber], ['127.0.0.1', echo.port, 0]);
      assert.ok(echoed.data.equals(payload));

      await udp.send(SocksClient.createUDPFrame({ remoteHost: { host: '127.0.0.1', port: dns.port }, data: dnsQuery('echo.test', 7) }), remoteHost!.port, remoteHost!.host);
      const answer = SocksClient.parseUDPFrame((await udp.receive()).data);
      assert.equal(answer.remoteHost.port, dns.port);
      assert.deepEqual(dnsAnswers(answer.data), { id: 7, rcode: 0, addresses: ['127.0.0.1'] });
    } finally {
      control.destroy();
      udp.close();
    }
  });
});
