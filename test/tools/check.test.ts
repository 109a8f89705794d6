import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runCheck, type CheckReport } from '../../src/tools/check.js';
import { startCli } from '../helpers/cli.js';
import { startDante, startDnsmasq, startEcho, startSocks } from '../helpers/servers.js';
import { startUdpEcho } from '../helpers/udp.js';

const statusOf = (report: CheckReport): Record<string, string> => Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
const check = (report: CheckReport, id: string) => report.checks.find((c) => c.id === id)!;

describe('socksgate check', () => {
  let echo: Awaited<ReturnType<typeof startUdpEcho>>;
  let tcp: Awaited<ReturnType<typeof startEcho>>;
  before(async () => {
    echo = await startUdpEcho();
    tcp = await startEcho();
  });
  after(async () => {
    echo.close();
    await tcp.close();
  });

  test('socksgate: every check passes; fragments are reassembled; the size probe finds the UDP maximum', async () => {
    const socks = await startSocks();
    const progress: string[] = [];
    try {
      const report = await runCheck({ proxy: `socks5://127.0.0.1:${socks.port}`, tcp: { host: '127.0.0.1', port: tcp.port }, udpEcho: { host: '127.0.0.1', port: echo.port }, onProgress: (m) => progress.push(m) });
      assert.deepEqual(statusOf(report), {
        methods: 'pass',
        connect: 'pass',
        associate: 'pass',
        'udp-round-trip': 'pass',
        'max-datagram': 'pass',
        fragments: 'pass',
        latency: 'pass',
        'source-port': 'pass',
        lifetime: 'pass',
      });
      assert.equal(report.verdict, 'pass');
      assert.equal(check(report, 'fragments').data?.reassembles, true);
      assert.equal(check(report, 'max-datagram').data?.bytes, 65497);
      assert.ok(progress.length >= 7, progress.join('; '));
    } finally {
      await socks.close();
    }
  });

  test('Dante: the same checks pass, and its dropping of FRAG ≠ 0 is reported', async () => {
    const dante = await startDante();
    try {
      const report = await runCheck({ proxy: `socks5://127.0.0.1:${dante.port}`, udpEcho: { host: '127.0.0.1', port: echo.port } });
      assert.equal(report.verdict, 'pass', JSON.stringify(report.checks));
      assert.equal(check(report, 'fragments').data?.reassembles, false);
      assert.match(check(report, 'fragments').detail, /dropped/);
      assert.equal(check(report, 'source-port').status, 'pass');
      assert.equal(check(report, 'lifetime').status, 'pass');
      assert.equal(check(report, 'connect').status, 'skip');
    } finally {
      await dante.close();
    }
  });

  test('a misconfigured advertise address is reported as unreachable, with a hint', async () => {
    const socks = await startSocks({ udp: { advertise: '::1' } });
    try {
      const report = await runCheck({ proxy: `socks5://127.0.0.1:${socks.port}`, udpEcho: { host: '127.0.0.1', port: echo.port }, timeoutMs: 500 });
      assert.equal(report.verdict, 'fail');
      assert.equal(check(report, 'associate').status, 'fail');
      assert.match(check(report, 'associate').detail, /BND.ADDR \[::1\]:\d+ is an IPv6 address; this client reached the server over IPv4/);
      assert.match(check(report, 'associate').hint!, /udp.advertise/);
      assert.equal(check(report, 'udp-round-trip').status, 'fail');
      assert.match(check(report, 'udp-round-trip').hint!, /wrong advertised address/);
    } finally {
      await socks.close();
    }
  });

  test('a BND.ADDR of 0.0.0.0 is flagged; the check carries on with the server\'s own address', async () => {
    const socks = await startSocks({ udp: { advertise: '0.0.0.0' } });
    try {
      const report = await runCheck({ proxy: `socks5://127.0.0.1:${socks.port}`, udpEcho: { host: '127.0.0.1', port: echo.port } });
      assert.equal(check(report, 'associate').status, 'warn');
      assert.match(check(report, 'associate').detail, /BND.ADDR is 0\.0\.0\.0:\d+: clients must guess/);
      assert.equal(check(report, 'udp-round-trip').status, 'pass');
      assert.equal(report.verdict, 'warn');
    } finally {
      await socks.close();
    }
  });

  test('a hint names the command that was refused: CONNECT denied, then UDP ASSOCIATE denied', async () => {
    const noConnect = await startSocks({ rules: [{ action: 'deny', commands: ['connect'] }] });
    const noUdp = await startSocks({ rules: [{ action: 'deny', commands: ['udp'] }] });
    try {
      const targets = { tcp: { host: '127.0.0.1', port: tcp.port }, udpEcho: { host: '127.0.0.1', port: echo.port } };
      const connectDenied = await runCheck({ proxy: `socks5://127.0.0.1:${noConnect.port}`, ...targets });
      assert.equal(check(connectDenied, 'connect').status, 'fail');
      assert.equal(check(connectDenied, 'connect').hint, 'a rule on the server forbids CONNECT for this client');
      assert.equal(check(connectDenied, 'associate').status, 'pass');
      const udpDenied = await runCheck({ proxy: `socks5://127.0.0.1:${noUdp.port}`, ...targets });
      assert.equal(check(udpDenied, 'connect').status, 'pass');
      assert.equal(check(udpDenied, 'associate').status, 'fail');
      assert.equal(check(udpDenied, 'associate').hint, 'a rule on the server forbids UDP ASSOCIATE for this client');
      // A target that refuses: the hint is about the target, not a rule.
      const closed = await startEcho();
      const closedPort = closed.port;
      await closed.close();
      const refused = await runCheck({ proxy: `socks5://127.0.0.1:${noUdp.port}`, tcp: { host: '127.0.0.1', port: closedPort } });
      assert.equal(check(refused, 'connect').hint, 'the target refused the connection: is something listening on that port?');
    } finally {
      await Promise.all([noConnect.close(), noUdp.close()]);
    }
  });

  test('a DNS target, a server that needs a login, and a server that is not there', async () => {
    const dns = await startDnsmasq({ 'example.org': ['127.0.0.8'] });
    const socks = await startSocks();
    try {
      const report = await runCheck({ proxy: `socks5://127.0.0.1:${socks.port}`, dns: { host: '127.0.0.1', port: dns.port, name: 'example.org' } });
      assert.equal(check(report, 'udp-round-trip').status, 'pass');
      assert.equal(check(report, 'max-datagram').status, 'skip');
      assert.equal(check(report, 'source-port').status, 'pass');
    } finally {
      await Promise.all([socks.close(), dns.close()]);
    }
    const gone = await startEcho();
    const port = gone.port;
    await gone.close();
    const missing = await runCheck({ proxy: `socks5://127.0.0.1:${port}`, timeoutMs: 500 });
    assert.equal(missing.verdict, 'fail');
    assert.match(check(missing, 'methods').detail, /ECONNREFUSED/);
  });

  test('on the command line: a readable report, --json, and exit code 1 on failure', async () => {
    const socks = await startSocks();
    try {
      const text = startCli(['check', `socks5://127.0.0.1:${socks.port}`, '--udp-echo', `127.0.0.1:${echo.port}`]);
      assert.equal(await text.exited(15_000), 0, text.stderr);
      assert.match(text.lines.map((l) => l.text).join('\n'), /\[PASS\] UDP round trip[\s\S]*verdict: PASS/);
      assert.match(text.stderr, /checking UDP ASSOCIATE: the reply/);
      const json = startCli(['check', `socks5://127.0.0.1:${socks.port}`, '--json']);
      assert.equal(await json.exited(15_000), 0);
      const parsed = JSON.parse(json.lines.map((l) => l.text ?? JSON.stringify(l)).join('\n')) as CheckReport;
      assert.equal(parsed.verdict, 'pass');
    } finally {
      await socks.close();
    }
    const failing = startCli(['check', 'socks5://127.0.0.1:1', '--timeout', '300']);
    assert.equal(await failing.exited(15_000), 1);
  });
});
