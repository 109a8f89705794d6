import assert from 'node:assert/strict';
import { request as httpGet } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { restartOnlyChanges } from '../../src/server/from-config.js';
import { hashPassword, UserStore } from '../../src/server/users.js';
import { listenPorts, startCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

const isListening = (line: Record<string, unknown>): boolean => typeof line.msg === 'string' && line.msg.includes('socksgate') && line.msg.includes('listening on');

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('gateway mode from the config and the command line', () => {
  test('upstreams are validated, each error names the key or flag, and no password is echoed', async () => {
    const flags = (upstreams: string[]) => new Map<string, unknown>([['upstreams', upstreams]]);
    await assert.rejects(loadConfig({ flags: flags(['http://127.0.0.1:3128']) }), /upstreams\[0\] \(flag --upstreams\): .*scheme "http" is not socks5; expected socks5:\/\/\[user:pass@\]host:port/);
    await assert.rejects(loadConfig({ flags: flags(['socks5://127.0.0.1']) }), /upstreams\[0\] \(flag --upstreams\): .*no port/);
    await assert.rejects(loadConfig({ flags: flags(['127.0.0.1:1080']) }), /upstreams\[0\] \(flag --upstreams\): .*expected socks5:\/\/\[user:pass@\]host:port/);
    await assert.rejects(loadConfig({ flags: flags(['socks5://a:1080', 'socks5://b:1080', 'socks5://u:p@a:1080']) }), /upstreams\[2\] .*a:1080 is already upstreams\[0\]/);
    await assert.rejects(loadConfig({ flags: flags(['socks5://alice:TOPSECRET@127.0.0.1:1080/x']) }), (error: Error) => {
      assert.match(error.message, /a path, query or fragment/);
      assert.match(error.message, /alice:\*\*\*@127/);
      assert.doesNotMatch(error.message, /TOPSECRET/);
      return true;
    });
    await assert.rejects(loadConfig({ flags: new Map<string, unknown>([['upstream.select', 'random']]) }), /upstream.select/);
    const config = await loadConfig({ flags: new Map<string, unknown>([['upstreams', ['socks5://u:p@127.0.0.1:1080', 'socks5://[::1]:1081']], ['upstream.udp', 'tcp']]) });
    assert.deepEqual(config.upstreams, ['socks5://u:p@127.0.0.1:1080', 'socks5://[::1]:1081']);
    assert.deepEqual(config.upstream, { select: 'hash', udp: 'tcp', healthInterval: 5, healthTimeout: 2, healthFailures: 2 });
    // A reload does not change the upstreams: it says a restart is needed.
    const plain = await loadConfig();
    assert.deepEqual(restartOnlyChanges(plain, config), ['upstreams', 'upstream']);
  });

  describe('socksgate serve --upstreams', () => {
    let upstream: Awaited<ReturnType<typeof startSocks>>;
    let echo: Awaited<ReturnType<typeof startEcho>>;
    before(async () => {
      upstream = await startSocks({ users: UserStore.fromEntries([['gw', await hashPassword(Buffer.from('up pass'), 10)]]) });
      echo = await startEcho();
    });
    after(async () => {
      await upstream.close();
      await echo.close();
    });

    test('relays through an upstream that needs a login; /metrics and /api/status show it without the password', async () => {
      const cli = startCli([
        'serve', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--log-format', 'json',
        '--upstreams', `socks5://gw:up%20pass@127.0.0.1:${upstream.port}`, '--upstream-health-interval', '100ms',
      ]);
      try {
        const admin = await cli.waitForLine((l) => typeof l.admin === 'string');
        const adminPort = Number(/:(\d+)$/.exec(admin.admin as string)![1]);
        const port = listenPorts(await cli.waitForLine(isListening)).get('127.0.0.1')!;
        const peer = await Peer.connect(port);
        try {
          await handshake(peer);
          peer.write(request(1, '127.0.0.1', echo.port));
          assert.equal((await readReply(peer, 5000)).code, 0);
          peer.write('through the gateway');
          assert.equal((await peer.read(19, 5000)).toString(), 'through the gateway');
          const name = `127.0.0.1:${upstream.port}`;
          let metrics = '';
          for (let i = 0; i < 100 && !metrics.includes(`socksgate_upstream_health_check_seconds{upstream="${name}"}`); i++) {
            metrics = await get(adminPort, '/metrics');
            await new Promise((r) => setTimeout(r, 50));
          }
          assert.match(metrics, new RegExp(`socksgate_upstream_up\\{upstream="${name}"\\} 1`));
          assert.match(metrics, new RegExp(`socksgate_upstream_sessions_active\\{upstream="${name}"\\} 1`));
          assert.match(metrics, new RegExp(`socksgate_upstream_sessions_total\\{upstream="${name}"\\} 1`));
          assert.match(metrics, new RegExp(`socksgate_upstream_failures_total\\{upstream="${name}",kind="health-check"\\} 0`));
          assert.match(metrics, new RegExp(`socksgate_upstream_health_check_seconds\\{upstream="${name}"\\} `));
          const status = JSON.parse(await get(adminPort, '/api/status')) as { upstreams: Array<{ upstream: string; up: boolean; sessionsActive: number }> };
          assert.deepEqual(status.upstreams.map((u) => [u.upstream, u.up, u.sessionsActive]), [[name, true, 1]]);
          const everything = metrics + JSON.stringify(status) + JSON.stringify(cli.lines) + cli.stderr;
          assert.doesNotMatch(everything, /up pass|up%20pass/);
          // The upstream saw the gateway log in with the URL's credentials.
          assert.equal(upstream.server.stats.authFailures, 0);
        } finally {
          peer.destroy();
        }
      } finally {
        assert.equal(await cli.stop(), 0, cli.stderr);
      }
    });
  });
});
