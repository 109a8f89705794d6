import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runPySocks } from '../helpers/python.js';
import { SocksClient } from 'socks';
import { waitFor } from '../helpers/peer.js';
import { startDnsmasq, startSocks } from '../helpers/servers.js';
import { UdpPeer, dnsAnswers, dnsQuery, startUdpEcho } from '../helpers/udp.js';

// PySocks opens the control connection on the first sendto and declares DST "0" with its UDP port.
const PYSOCKS_UDP = `
import socket, sys, socks, binascii
proxy_port, echo_port, dns_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port)
s.settimeout(5)
ok = 0
for size in (0, 1, 100, 1400, 8000, 60000):
    data = bytes((i * 31 + size) % 256 for i in range(size))
    s.sendto(data, ("127.0.0.1", echo_port))
    got, source = s.recvfrom(65535)
    assert got == data and source == ("127.0.0.1", echo_port), (size, len(got), source)
    ok += 1
s.sendto(b"by name", ("echo.test", echo_port))
got, source = s.recvfrom(65535)
assert got == b"by name", got
s.sendto(binascii.unhexlify(sys.argv[4]), ("127.0.0.1", dns_port))
answer, source = s.recvfrom(65535)
print("OK", ok, source[1], binascii.hexlify(answer).decode())
`;


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
    const result = await runPySocks(PYSOCKS_UDP, [String(socks.port), String(echo.port), String(dns.port), query.toString('hex')]);
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
