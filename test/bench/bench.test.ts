import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addedLatency, fixedPortTable, limitsTable, markdownTable, median, minimalServerLine, ratio, ratioToDante, steeredShare, summaryLine, svgPlot, verdict, type Figure } from '../../bench/report.js';
import { requireProgram, startSocks } from '../helpers/servers.js';

const figure = (over: Partial<Figure>): Figure => ({ id: 'f', group: 'udp', label: 'UDP 64 B, 16 assoc', unit: 'datagrams/s', higherIsBetter: true, samples: {}, ...over });

describe('bench report helpers', () => {
  test('median takes the middle of sorted finite values, the mean of the two middles for an even count', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([5, Number.NaN, 1, 3]), 3);
    assert.equal(median([]), undefined);
  });

  test('ratio is undefined without a positive reference', () => {
    assert.equal(ratio(30, 10), 3);
    assert.equal(ratio(30, 0), undefined);
    assert.equal(ratio(undefined, 10), undefined);
    assert.equal(ratio(5, -1), undefined);
  });

  test('verdicts follow the direction of the figure and the absolute bound', () => {
    const udp = figure({ target: 2, samples: { socksgate: [200, 210, 190], dante: [100, 90, 110] } });
    assert.equal(ratioToDante(udp, 'socksgate'), 2);
    assert.equal(verdict(udp), 'met');
    assert.equal(verdict(figure({ target: 2, samples: { socksgate: [199], dante: [100] } })), 'not met');
    const p99 = figure({ higherIsBetter: false, target: 1, samples: { socksgate: [80], dante: [100] } });
    assert.equal(verdict(p99), 'met');
    assert.equal(verdict({ ...p99, samples: { socksgate: [101], dante: [100] } }), 'not met');
    const memory = figure({ higherIsBetter: false, absoluteTarget: 4, unit: 'KiB', samples: { socksgate: [3.5], dante: [400] } });
    assert.equal(verdict(memory), 'met');
    assert.equal(verdict({ ...memory, samples: { socksgate: [4.5] } }), 'not met');
    assert.equal(verdict(figure({ target: 2, samples: { dante: [1] } })), 'no data');
    assert.equal(verdict(figure({})), 'no target');
    assert.match(summaryLine(udp), /^- UDP 64 B, 16 assoc: socksgate 200 datagrams\/s vs Dante 100 \(2\.00×\); target ≥ 2× Dante: target met\.$/);
  });

  test('the new-sessions figure says what the minimal C server made and socksgate\'s share of it', () => {
    const rate = figure({ id: 'rate', group: 'rate', label: 'new CONNECT sessions', unit: 'sessions/s', target: 2, samples: { socksgate: [4500], dante: [3000], 'minimal-c': [6000] } });
    assert.equal(minimalServerLine(rate), '- new CONNECT sessions, beside a minimal C server (socksload connect-server: no checks, no logs, a thread per CPU): it made 6000 sessions/s (2.00× Dante); socksgate made 75% of it.');
    assert.equal(minimalServerLine(figure({ samples: { socksgate: [1], dante: [1] } })), null);
  });

  test('added latency subtracts the median direct round trip from every server sample', () => {
    const f = figure({ higherIsBetter: false, samples: { direct: [10, 30, 20], socksgate: [120, 140], dante: [60] } });
    addedLatency([f]);
    assert.deepEqual(f.samples, { direct: [10, 30, 20], socksgate: [100, 120], dante: [40] });
  });

  test('the table has one row per figure and the plot one bar per ratio to Dante', () => {
    const figures = [
      figure({ id: 'a', label: 'A & B', target: 2, samples: { direct: [900], socksgate: [300], dante: [100], v2ray: [150] } }),
      figure({ id: 'b', label: 'TCP', samples: { socksgate: [1], dante: [2], v2ray: [2], microsocks: [0.5] } }),
      figure({ id: 'c', label: 'no Dante', samples: { socksgate: [1] } }),
    ];
    const table = markdownTable(figures).split('\n');
    assert.equal(table.length, 2 + 3);
    assert.equal(table[2], '| A & B | datagrams/s | 900 | 300 | 100 | 150 | — | 3.00× | 1.50× | ≥ 2× Dante | met |');
    const svg = svgPlot(figures, 'title <x>');
    assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"') && svg.trimEnd().endsWith('</svg>'));
    assert.equal(svg.match(/class="bar"/g)?.length, 2 + 3);
    assert.ok(svg.includes('A &amp; B') && svg.includes('title &lt;x&gt;') && !svg.includes('no Dante'));
  });

  test('a limits figure compares socksgate with its own login without limits, not with Dante', () => {
    const f = figure({ id: 'limits-redis-512-16', group: 'limits', label: 'per-user rate, Redis: UDP 512 B, 16 assoc', target: 0.95, baseline: 'socksgate-login',
      samples: { 'socksgate-login': [100, 120, 110], socksgate: [105, 104, 106], dante: [10] }, storeRequests: [70, 74] });
    assert.equal(verdict(f), 'met');
    assert.equal(verdict({ ...f, samples: { 'socksgate-login': [110], socksgate: [104] } }), 'not met');
    assert.match(summaryLine(f), /^- per-user rate, Redis: UDP 512 B, 16 assoc: socksgate 105 datagrams\/s vs no limits 110 \(0\.95×\); target ≥ 0\.95× no limits: target met\.$/);
    const table = limitsTable([f]).split('\n');
    assert.equal(table.length, 3);
    assert.equal(table[2], '| per-user rate, Redis: UDP 512 B, 16 assoc | datagrams/s | 110 | 105 | 0.95× | 70, 74 | ≥ 0.95× no limits | met |');
  });

  test('the fixed-port table puts fixed-port mode beside the default mode, each as a ratio to Dante, with the share steered', () => {
    const f = figure({ id: 'fixed-512-16', group: 'fixed', label: 'fixed port: UDP 512 B, 16 assoc', target: 2,
      samples: { direct: [900], socksgate: [240, 200], 'socksgate-default': [400], dante: [100] }, steered: [{ steered: 30, total: 100 }, { steered: 10, total: 300 }] });
    assert.equal(steeredShare(f), '10.0% (40 of 400)');
    assert.equal(steeredShare(figure({})), '—');
    const table = fixedPortTable([f]).split('\n');
    assert.equal(table.length, 3);
    assert.equal(table[2], '| fixed port: UDP 512 B, 16 assoc | datagrams/s | 900 | 220 | 400 | 100 | 2.20× | 4.00× | 10.0% (40 of 400) | ≥ 2× Dante | met |');
    // Added latency subtracts the direct round trip from the default mode's samples too.
    const p99 = figure({ group: 'fixed', higherIsBetter: false, samples: { direct: [10], socksgate: [50], 'socksgate-default': [30] } });
    addedLatency([p99]);
    assert.deepEqual(p99.samples, { direct: [10], socksgate: [40], 'socksgate-default': [20] });
  });
});

/** The first `prefix {json}` line of a child's stdout. */
function resultLine(child: ChildProcess, prefix: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no ${prefix} line: ${out}`)), timeoutMs);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const l = out.split('\n').slice(0, -1).find((x) => x.startsWith(`${prefix} `));
      if (l) {
        clearTimeout(timer);
        resolve(JSON.parse(l.slice(prefix.length + 1)) as Record<string, unknown>);
      }
    });
    child.on('exit', () => setTimeout(() => reject(new Error(`exited before ${prefix}: ${out}`)), 100));
  });
}

describe('socksload, the bench generator', () => {
  let dir: string;
  let generator: string;
  let echo: ChildProcess;
  let echoPort: number;
  before(async () => {
    const gcc = requireProgram('gcc', 'gcc');
    dir = mkdtempSync(join(tmpdir(), 'socksgate-socksload-'));
    generator = join(dir, 'socksload');
    const source = fileURLToPath(new URL('../../../bench/gen/socksload.c', import.meta.url));
    const built = spawnSync(gcc, ['-O2', '-Wall', '-Werror', '-pthread', '-o', generator, source], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    echo = spawn(generator, ['echo-udp', 'port=0', 'threads=1'], { stdio: ['pipe', 'pipe', 'inherit'] });
    echoPort = Number((await resultLine(echo, 'READY', 10_000)).port);
  });
  after(() => {
    echo?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = async (args: string[]): Promise<Record<string, unknown>> => {
    const child = spawn(generator, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      return await resultLine(child, 'RESULT', 20_000);
    } finally {
      child.kill('SIGKILL');
    }
  };

  test('compiles with -Wall -Werror and echoes datagrams on the direct path', async () => {
    const r = await run(['udp', 'proxy=0', `target=${echoPort}`, 'assoc=2', 'size=100', 'window=4', 'seconds=1']);
    assert.equal(r.bad, 0);
    assert.ok(Number(r.received) > 0, JSON.stringify(r));
  });

  test('new sessions spread over the TCP echo addresses, direct and through socksgate', async () => {
    // once=1: the echo ends each connection after its answer, as in the bench's new-sessions figure.
    const tcpEcho = spawn(generator, ['echo-tcp', 'port=0', 'addrs=4', 'once=1'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const socks = await startSocks();
    try {
      const ready = await resultLine(tcpEcho, 'READY', 10_000);
      assert.equal(ready.addrs, 4);
      // The bench's minimal CONNECT server carries the same sessions.
      const minimal = spawn(generator, ['connect-server', 'port=0', 'threads=2'], { stdio: ['pipe', 'pipe', 'inherit'] });
      try {
        const minimalPort = Number((await resultLine(minimal, 'READY', 10_000)).port);
        for (const proxy of [0, socks.port, minimalPort]) {
          const r = await run(['rate', `proxy=${proxy}`, `target=${String(ready.port)}`, 'seconds=1', 'threads=4', 'srcn=4', 'dsts=4']);
          assert.equal(r.errors, 0, JSON.stringify(r));
          assert.ok(Number(r.sessions) > 0, JSON.stringify(r));
        }
      } finally {
        minimal.kill('SIGKILL');
      }
      // Every one of the four echo addresses answers.
      for (const last of ['127.0.0.1', '127.0.1.1', '127.0.1.2', '127.0.1.3']) {
        const echoed = await new Promise<string>((resolve, reject) => {
          const c = connect({ host: last, port: Number(ready.port) }, () => c.end('ping'));
          let got = '';
          c.on('data', (d: Buffer) => (got += d.toString()));
          c.on('close', () => resolve(got));
          c.on('error', reject);
        });
        assert.equal(echoed, 'ping', last);
      }
    } finally {
      await socks.close();
      tcpEcho.kill('SIGKILL');
    }
  });

  test('relays datagrams through socksgate and holds idle associations that each got their echo', async () => {
    const socks = await startSocks();
    try {
      const r = await run(['udp', `proxy=${socks.port}`, `target=${echoPort}`, 'assoc=2', 'size=100', 'window=4', 'seconds=1']);
      assert.equal(r.bad, 0);
      assert.ok(Number(r.received) > 0, JSON.stringify(r));
      // Latency peers take turns in slices: each gets its share of the datagrams and every one comes back.
      const lat = await run(['latency', `proxies=0,${socks.port}`, `target=${echoPort}`, 'rate=1000', 'size=64', 'seconds=1', 'slice=50']);
      const peers = lat.peers as { proxy: number; sent: number; received: number; p50us: number }[];
      assert.deepEqual(peers.map((p) => p.proxy), [0, socks.port]);
      for (const p of peers) {
        // Each took its turns (how many datagrams fit in 1 s depends on the machine's load: the bench
        // measures that, this test only that every datagram sent came back).
        assert.ok(p.sent > 0, JSON.stringify(lat));
        assert.equal(p.received, p.sent, JSON.stringify(lat));
        assert.ok(p.p50us > 0, JSON.stringify(lat));
      }
      const holder = spawn(generator, ['idle', `proxy=${socks.port}`, `target=${echoPort}`, 'count=40', 'share=4', 'srcn=2', 'hold=20'], { stdio: ['pipe', 'pipe', 'inherit'] });
      try {
        const ready = await resultLine(holder, 'READY', 15_000);
        assert.deepEqual([ready.open, ready.errors, ready.echoed], [40, 0, 40]);
        const done = resultLine(holder, 'RESULT', 15_000);
        holder.stdin!.end();
        assert.equal((await done).closedByServer, 0);
      } finally {
        holder.kill('SIGKILL');
      }
    } finally {
      await socks.close();
    }
  });
});
