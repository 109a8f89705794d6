// npm run bench — socksgate side by side with Dante, v2ray and microsocks on loopback, every figure a median of
// several runs and a ratio to Dante measured in the same run. See README "Benchmarks".
//
//   npm run bench -- [--quick] [--only udp,latency,tcp,rate,memory,fixed,limits,scale] [--runs N] [--seconds S]
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { measureMemory, removeNamespace, scale, type MemorySample, type ScaleResult } from './capacity.js';
import { removeTempDirs, scrapeCounter, startEcho, startMinimalServer, startServer, type RunningServer } from './peers.js';
import { killAllNow, line, nofileHardLimit, start, stop, stopAll } from './procs.js';
import { LIMITS_LOGIN, LIMITS_PEERS, limitsFigures, startLimitsServers } from './limits.js';
import { SERVERS, addedLatency, fixedPortTable, limitsTable, markdownTable, median, minimalServerLine, summaryLine, svgPlot, type Figure, type Peer, type ServerName } from './report.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const GROUPS = ['udp', 'latency', 'tcp', 'rate', 'memory', 'fixed', 'limits', 'scale'] as const;
// Workers of both socksgate instances in the fixed-port group: the mode exists for many instances and workers
// sharing one port, so it is measured with the steering between workers at work.
const FIXED_WORKERS = 2;
// How long the direct UDP path's generator and echo poll before they sleep (µs).
const DIRECT_SPIN_US = 50;
const RATE_DESTINATIONS = 16;

interface Options {
  quick: boolean;
  only: Set<string>;
  runs: number;
  seconds: number;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, only: new Set(GROUPS), runs: 3, seconds: 3 };
  let runsGiven = false, secondsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--only') {
      o.only = new Set(value().split(',').map((s) => s.trim()).filter(Boolean));
      for (const g of o.only) if (!(GROUPS as readonly string[]).includes(g)) throw new Error(`--only: unknown figure group "${g}" (one of ${GROUPS.join(', ')})`);
    } else if (a === '--runs') {
      o.runs = Number(value());
      runsGiven = true;
    } else if (a === '--seconds') {
      o.seconds = Number(value());
      secondsGiven = true;
    } else throw new Error(`unknown option ${a}; usage: npm run bench -- [--quick] [--only ${GROUPS.join(',')}] [--runs N] [--seconds S]`);
  }
  if (o.quick) {
    if (!runsGiven) o.runs = 1;
    if (!secondsGiven) o.seconds = 1;
  }
  if (!(Number.isInteger(o.runs) && o.runs >= 1 && o.runs <= 20)) throw new Error('--runs must be an integer from 1 to 20');
  if (!(Number.isInteger(o.seconds) && o.seconds >= 1 && o.seconds <= 60)) throw new Error('--seconds must be an integer from 1 to 60');
  return o;
}

const log = (s: string): void => void process.stdout.write(`${s}\n`);

/** One generator run; resolves with its RESULT line. Bounded by its own deadline plus set-up time. */
async function generate(generator: string, args: string[], seconds: number): Promise<Record<string, unknown>> {
  const p = start(`socksload ${args[0]}`, generator, args);
  try {
    const result = await line(p, 'RESULT', (seconds + 60) * 1000);
    if (result.error) throw new Error(`socksload ${args.join(' ')}: ${String(result.error)}`);
    return result;
  } finally {
    await stop(p);
  }
}

/** Rotates the order by the round, so noise on the shared machine falls on every server alike. */
function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % Math.max(1, items.length);
  return [...items.slice(k), ...items.slice(0, k)];
}

function push(figure: Figure, peer: Peer, value: number): void {
  (figure.samples[peer] ??= []).push(value);
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const generator = `${root}build/bench/socksload`;
  const cli = `${root}dist/cli.js`;
  execFileSync('gcc', ['-O2', '-pthread', '-o', generator, `${root}bench/gen/socksload.c`], { stdio: 'inherit' });
  const nofile = nofileHardLimit();
  const memoryCount = Math.min(10_000, Math.floor((nofile - 500) / 2 / 500) * 500);
  log(`socksgate bench: ${o.runs} run(s) of ${o.seconds} s, ${cpus().length} CPU(s), RLIMIT_NOFILE hard ${nofile}, groups ${[...o.only].join(',')}`);

  const sizes = o.quick ? [512] : [64, 512, 1400];
  const assocs = o.quick ? [1, 16] : [1, 16, 256];
  const figures: Figure[] = [];
  const figure = (f: Omit<Figure, 'samples'>): Figure => {
    const made: Figure = { ...f, samples: {} };
    figures.push(made);
    return made;
  };
  const udpFigures = new Map<string, Figure>();
  if (o.only.has('udp')) {
    for (const size of sizes) {
      for (const assoc of assocs) {
        udpFigures.set(`${size}/${assoc}`, figure({ id: `udp-${size}-${assoc}`, group: 'udp', label: `UDP ${size} B, ${assoc} assoc`, unit: 'datagrams/s',
          higherIsBetter: true, target: assoc === 1 ? 1.3 : 2.0 }));
      }
    }
  }
  const p50 = o.only.has('latency') ? figure({ id: 'latency-p50', group: 'latency', label: 'added latency p50', unit: 'µs', higherIsBetter: false }) : undefined;
  const p99 = o.only.has('latency') ? figure({ id: 'latency-p99', group: 'latency', label: 'added latency p99', unit: 'µs', higherIsBetter: false, target: 1.0 }) : undefined;
  const tcpFigures = new Map<number, Figure>();
  if (o.only.has('tcp')) {
    for (const conns of [1, 4]) tcpFigures.set(conns, figure({ id: `tcp-${conns}`, group: 'tcp', label: `TCP echo, ${conns} tunnel${conns > 1 ? 's' : ''}`, unit: 'Mbit/s', higherIsBetter: true, target: 1.0 }));
  }
  const rate = o.only.has('rate') ? figure({ id: 'rate', group: 'rate', label: 'new CONNECT sessions', unit: 'sessions/s', higherIsBetter: true, target: 2.0 }) : undefined;
  const memory = o.only.has('memory')
    ? figure({ id: 'memory', group: 'memory', label: `memory per idle UDP association (${memoryCount.toLocaleString('en')} open)`, unit: 'KiB', higherIsBetter: false, absoluteTarget: 4 })
    : undefined;
  // Fixed-port mode (--udp-port: TCP and UDP on one port) beside the default mode, both with FIXED_WORKERS workers.
  const fixedFigures = new Map<number, Figure>();
  if (o.only.has('fixed')) {
    for (const assoc of assocs) {
      fixedFigures.set(assoc, figure({ id: `fixed-512-${assoc}`, group: 'fixed', label: `fixed port: UDP 512 B, ${assoc} assoc`, unit: 'datagrams/s',
        higherIsBetter: true, target: assoc === 1 ? 1.3 : 2.0, steered: [] }));
    }
  }
  const fixedP50 = o.only.has('fixed') ? figure({ id: 'fixed-latency-p50', group: 'fixed', label: 'fixed port: added latency p50', unit: 'µs', higherIsBetter: false }) : undefined;
  const fixedP99 = o.only.has('fixed') ? figure({ id: 'fixed-latency-p99', group: 'fixed', label: 'fixed port: added latency p99', unit: 'µs', higherIsBetter: false, target: 1.0 }) : undefined;
  // A per-user rate that never binds, on the local store and on Redis, against the same login without limits.
  const limitsFigs = o.only.has('limits') ? limitsFigures(assocs) : new Map<string, Figure>();
  figures.push(...limitsFigs.values());
  const memorySamples: MemorySample[] = [];
  let scaleResults: ScaleResult[] = [];
  const generatorErrors: string[] = [];

  const needsPeers = ['udp', 'latency', 'tcp', 'rate', 'memory', 'fixed', 'limits'].some((g) => o.only.has(g));
  const needsAll = ['udp', 'latency', 'tcp', 'rate', 'memory'].some((g) => o.only.has(g));
  if (needsPeers) {
    const udpEcho = await startEcho(generator, 'echo-udp');
    // The direct UDP figures' echo and generator poll instead of sleeping between datagrams: what they can
    // do at most. Against the servers they sleep, so that no polling takes CPU from the server under test.
    const directUdpEcho = await startEcho(generator, 'echo-udp', [], 0, DIRECT_SPIN_US);
    const tcpEcho = await startEcho(generator, 'echo-tcp');
    // The new-sessions figure's own TCP echo. Its sessions go to RATE_DESTINATIONS echo addresses, and the echo
    // ends each connection after its answer (its FIN first). A server's upstream connections all come from
    // 127.0.0.1 and its ephemeral ports: when the server closed first, each port stayed 60 s in TIME_WAIT, and
    // the next server measured met a full range: the kernel's port search in connect() (__inet_hash_connect)
    // took 40% of the CPU (every server after Dante ran at a third of its speed), and Dante, which binds its
    // source port before connecting, failed hundreds of sessions (reply 03) right after socksgate. Now the
    // TIME_WAIT is the echo's, on its own port.
    const rateEcho = await startEcho(generator, 'echo-tcp', [], 0, 0, [`addrs=${RATE_DESTINATIONS}`, 'once=1']);
    // Beside the servers in the new-sessions figure: the least a CONNECT session costs on this machine.
    const minimal = rate ? await startMinimalServer(generator, cpus().length) : undefined;
    const servers: RunningServer[] = [];
    for (const name of SERVERS) if (needsAll || (fixedFigures.size > 0 && name === 'dante')) servers.push(await startServer(name, cli, nofile));
    const limited = limitsFigs.size > 0 ? await startLimitsServers(cli, nofile) : undefined;
    const byName = (n: ServerName): RunningServer => servers.find((s) => s.name === n)!;
    const fixed = fixedFigures.size > 0 ? await startServer('socksgate', cli, nofile, { fixedPort: true, workers: FIXED_WORKERS }) : undefined;
    const fixedDefault = fixedFigures.size > 0 ? await startServer('socksgate', cli, nofile, { workers: FIXED_WORKERS }) : undefined;
    const fixedPeers: Peer[] = ['direct', 'socksgate', 'socksgate-default', 'dante'];
    const fixedProxyOf = (p: Peer): number => (p === 'socksgate' ? fixed!.port : p === 'socksgate-default' ? fixedDefault!.port : proxyOf(p));
    const udpPeers: Peer[] = ['direct', 'socksgate', 'dante', 'v2ray'];
    const tcpPeers: Peer[] = ['direct', 'socksgate', 'dante', 'v2ray', 'microsocks'];
    const proxyOf = (p: Peer): number => (p === 'direct' ? 0 : byName(p as ServerName).port);
    const secs = String(o.seconds);
    // One failed generator run (a server refusing, a crash) is recorded and leaves that sample out.
    const attempt = async (what: string, f: () => Promise<void>): Promise<void> => {
      try {
        await f();
      } catch (e) {
        generatorErrors.push(`${what}: ${String(e).slice(0, 300)}`);
        log(`  ! ${what}: ${String(e).slice(0, 200)}`);
      }
    };
    for (let round = 0; round < o.runs; round++) {
      log(`round ${round + 1}/${o.runs}`);
      for (const [key, f] of udpFigures) {
        const [size = 0, assoc = 1] = key.split('/').map(Number);
        for (const peer of rotate(udpPeers, round)) {
          await attempt(`${f.label} ${peer}`, async () => {
            const direct = peer === 'direct';
            const r = await generate(generator, ['udp', `proxy=${proxyOf(peer)}`, `target=${(direct ? directUdpEcho : udpEcho).port}`, `assoc=${assoc}`, `size=${size}`,
              'window=8', `seconds=${secs}`, `threads=${assoc > 1 ? 2 : 1}`, `spin=${direct ? DIRECT_SPIN_US : 0}`], o.seconds);
            push(f, peer, Number(r.pps));
            log(`  ${f.label.padEnd(24)} ${peer.padEnd(10)} ${Number(r.pps).toFixed(0).padStart(8)} datagrams/s (lost ${String(r.lost)})`);
          });
        }
      }
      if (p50 && p99) {
        // One generator run for all peers: they take turns in 100 ms slices until each has had its seconds, so
        // a slow spell of the shared machine falls on all of them alike (see socksload.c).
        const order = rotate(udpPeers, round);
        await attempt('latency', async () => {
          const r = await generate(generator, ['latency', `proxies=${order.map(proxyOf).join(',')}`, `target=${udpEcho.port}`, 'rate=2000', 'size=64',
            `seconds=${secs}`, 'slice=100'], o.seconds * order.length);
          const results = r.peers as { proxy: number; sent: number; received: number; p50us: number; p99us: number }[];
          order.forEach((peer, i) => {
            const m = results[i];
            if (!m || m.proxy !== proxyOf(peer)) throw new Error(`latency: no result for ${peer}`);
            push(p50, peer, m.p50us);
            push(p99, peer, m.p99us);
            log(`  latency at 2000/s        ${peer.padEnd(10)} p50 ${String(m.p50us)} µs p99 ${String(m.p99us)} µs (${String(m.received)}/${String(m.sent)} back)`);
          });
        });
      }
      for (const [conns, f] of tcpFigures) {
        for (const peer of rotate(tcpPeers, round)) {
          await attempt(`${f.label} ${peer}`, async () => {
            const r = await generate(generator, ['tcp', `proxy=${proxyOf(peer)}`, `target=${tcpEcho.port}`, `conns=${conns}`, `seconds=${secs}`], o.seconds);
            push(f, peer, Number(r.mbps));
            log(`  ${f.label.padEnd(24)} ${peer.padEnd(10)} ${Number(r.mbps).toFixed(0).padStart(8)} Mbit/s`);
          });
        }
      }
      for (const [assoc, f] of fixedFigures) {
        for (const peer of rotate(fixedPeers, round)) {
          await attempt(`${f.label} ${peer}`, async () => {
            const direct = peer === 'direct';
            const counters = async (): Promise<[number, number, number]> => (peer === 'socksgate'
              ? [await scrapeCounter(fixed!.admin!, 'socksgate_udp_steered_total'),
                await scrapeCounter(fixed!.admin!, 'socksgate_udp_datagrams_total', 'direction="client_to_proxy"'),
                await scrapeCounter(fixed!.admin!, 'socksgate_udp_dropped_total')]
              : [0, 0, 0]);
            const before = await counters();
            const r = await generate(generator, ['udp', `proxy=${fixedProxyOf(peer)}`, `target=${(direct ? directUdpEcho : udpEcho).port}`, `assoc=${assoc}`, 'size=512',
              'window=8', `seconds=${secs}`, `threads=${assoc > 1 ? 2 : 1}`, `spin=${direct ? DIRECT_SPIN_US : 0}`], o.seconds);
            const after = await counters();
            push(f, peer, Number(r.pps));
            let extra = '';
            if (peer === 'socksgate') {
              f.steered!.push({ steered: after[0] - before[0], total: after[1] - before[1] });
              extra = `, steered ${after[0] - before[0]} of ${after[1] - before[1]}, dropped ${after[2] - before[2]}`;
            }
            log(`  ${f.label.padEnd(34)} ${peer.padEnd(18)} ${Number(r.pps).toFixed(0).padStart(8)} datagrams/s (lost ${String(r.lost)}${extra})`);
          });
        }
      }
      if (fixedP50 && fixedP99) {
        const order = rotate(fixedPeers, round);
        await attempt('fixed-port latency', async () => {
          const r = await generate(generator, ['latency', `proxies=${order.map(fixedProxyOf).join(',')}`, `target=${udpEcho.port}`, 'rate=2000', 'size=64',
            `seconds=${secs}`, 'slice=100'], o.seconds * order.length);
          const results = r.peers as { proxy: number; sent: number; received: number; p50us: number; p99us: number }[];
          order.forEach((peer, i) => {
            const m = results[i];
            if (!m || m.proxy !== fixedProxyOf(peer)) throw new Error(`fixed-port latency: no result for ${peer}`);
            push(fixedP50, peer, m.p50us);
            push(fixedP99, peer, m.p99us);
            log(`  fixed port: latency at 2000/s      ${peer.padEnd(18)} p50 ${String(m.p50us)} µs p99 ${String(m.p99us)} µs (${String(m.received)}/${String(m.sent)} back)`);
          });
        });
      }
      for (const assoc of limitsFigs.size > 0 ? assocs : []) {
        const local = limitsFigs.get(`local/512/${assoc}`)!, redis = limitsFigs.get(`redis/512/${assoc}`)!;
        for (const peer of rotate(LIMITS_PEERS, round)) {
          await attempt(`limits ${peer} ${assoc}`, async () => {
            const before = peer === 'redis' ? await limited!.storeRequests() : 0;
            const r = await generate(generator, ['udp', `proxy=${limited!.servers[peer].port}`, `target=${udpEcho.port}`, `assoc=${assoc}`, 'size=512',
              'window=8', `seconds=${secs}`, `threads=${assoc > 1 ? 2 : 1}`, ...LIMITS_LOGIN], o.seconds);
            const pps = Number(r.pps);
            let extra = '';
            if (peer === 'login') {
              push(local, 'socksgate-login', pps);
              push(redis, 'socksgate-login', pps);
            } else push(peer === 'local' ? local : redis, 'socksgate', pps);
            if (peer === 'redis') {
              const calls = (await limited!.storeRequests()) - before;
              redis.storeRequests!.push(calls);
              extra = `, ${calls} Redis script calls`;
            }
            log(`  limits: UDP 512 B, ${String(assoc).padStart(3)} assoc ${peer.padEnd(6)} ${pps.toFixed(0).padStart(8)} datagrams/s (lost ${String(r.lost)}${extra})`);
          });
        }
      }
      if (rate) {
        for (const peer of rotate([...tcpPeers, 'minimal-c' as const], round)) {
          await attempt(`rate ${peer}`, async () => {
            const r = await generate(generator, ['rate', `proxy=${peer === 'minimal-c' ? minimal!.port : proxyOf(peer)}`, `target=${rateEcho.port}`, `seconds=${secs}`, 'threads=8', 'srcn=16',
              `dsts=${RATE_DESTINATIONS}`], o.seconds);
            push(rate, peer, Number(r.perSecond));
            log(`  new sessions             ${peer.padEnd(10)} ${Number(r.perSecond).toFixed(0).padStart(8)} sessions/s (errors ${String(r.errors)}${Number(r.errors) > 0 ? `, last: ${String(r.lastError)}` : ''})`);
          });
        }
      }
    }
    // Memory after every throughput round, not within each: in three full runs the throughput round that
    // followed a memory phase (Dante alone forks over 300 processes and takes over 4 GB there) had minutes in
    // which every server ran at a third of its speed, which fell on some servers of a figure and not others.
    for (let round = 0; memory && round < o.runs; round++) {
      log(`memory round ${round + 1}/${o.runs}`);
      // A fresh instance of each server, so memory left over from the throughput figures (heaps that grew and
      // were not given back) counts in neither the idle nor the loaded figure.
      for (const name of rotate(SERVERS.filter((s) => byName(s).udp), round)) {
        await attempt(`memory ${name}`, async () => {
          const fresh = await startServer(name, cli, nofile);
          try {
            const m = await measureMemory(fresh, generator, udpEcho.port, memoryCount);
            memorySamples.push(m);
            if (m.hold.errors === 0) push(memory, name, m.perAssociationKiB);
            else generatorErrors.push(`memory ${name}: ${m.hold.errors} of ${m.count} associations failed (${m.hold.lastError})`);
            log(`  memory ${name.padEnd(10)} ${m.perAssociationKiB.toFixed(2)} KiB/assoc (Pss ${m.idlePssKiB} → ${m.loadedPssKiB} KiB over ${m.processes} process(es); `
              + `${m.hold.open} open, ${m.hold.echoed} echoed, ${m.hold.errors} errors${m.hold.lastError ? `: ${m.hold.lastError}` : ''})`);
          } finally {
            await stop(fresh.process);
          }
        });
      }
    }
    // Added latency: each server's median round trip minus the direct one (same generator, same echo, no proxy).
    if (p50 && p99) addedLatency([p50, p99]);
    if (fixedP50 && fixedP99) addedLatency([fixedP50, fixedP99]);
    for (const s of servers) await stop(s.process);
    if (fixed) await stop(fixed.process);
    if (fixedDefault) await stop(fixedDefault.process);
    if (limited) await limited.stop();
    await stop(udpEcho.process);
    await stop(directUdpEcho.process);
    await stop(tcpEcho.process);
    await stop(rateEcho.process);
    if (minimal) await stop(minimal.process);
  }

  if (o.only.has('scale')) {
    const count = o.quick ? 5000 : 50_000;
    log(`scale: ${count} associations on socksgate in a network namespace`);
    scaleResults = await scale(generator, cli, nofile, count);
    for (const s of scaleResults) log(`  ${s.mode}: ${s.hold.open} open, ${s.hold.errors} errors, ${s.hold.echoed} echoed, ${s.hold.closedByServer} closed by the server; alive ${s.serverAlive}${s.hold.lastError ? `; last error ${s.hold.lastError}` : ''}${s.error ? `; ${s.error}` : ''}`);
  }

  writeResults(o, figures, memorySamples, scaleResults, generatorErrors, nofile);
}

function writeResults(o: Options, figures: Figure[], memorySamples: MemorySample[], scaleResults: ScaleResult[], errors: string[], nofile: number): void {
  const dir = `${root}bench/results/`;
  mkdirSync(dir, { recursive: true });
  const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const headroom = figures.filter((f) => f.group !== 'memory' && f.group !== 'limits' && f.higherIsBetter).map((f) => {
    const direct = median(f.samples.direct ?? []);
    const best = Math.max(...SERVERS.map((s) => median(f.samples[s] ?? []) ?? 0));
    return `${f.label}: direct ${direct?.toFixed(0) ?? '—'} vs best server ${best.toFixed(0)} (${direct && best ? (direct / best).toFixed(1) : '—'}×)`;
  });
  const md: string[] = [
    '# socksgate side by side with Dante, v2ray and microsocks',
    '',
    `${when}, \`npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\`: ${o.runs} run(s) of ${o.seconds} s per figure and server, `
      + `medians, servers interleaved within each round. ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), shared with other work: the machine is noisy, `
      + 'so read ratios, not digits. Generator, echo targets and servers share the same CPUs.',
    '',
    '## Summary',
    '',
    ...figures.flatMap((f) => [summaryLine(f), minimalServerLine(f)].filter((l): l is string => l !== null)),
    ...scaleResults.map((s) => `- ${s.hold.requested.toLocaleString('en')} associations, socksgate ${s.mode}: ${s.hold.errors === 0 && s.hold.closedByServer === 0 && s.serverAlive && !s.error ? 'held with no errors' : 'NOT held'}`
      + ` (${s.hold.open} open, ${s.hold.echoed} answered, ${s.hold.errors} failed, ${s.hold.closedByServer} closed by the server${s.hold.lastError ? `; last error: ${s.hold.lastError}` : ''}${s.error ? `; ${s.error}` : ''}; server ${s.serverAlive ? 'alive' : 'gone'}, Pss ${s.serverPssMiB} MiB, RLIMIT_NOFILE ${s.nofile}).`),
    '',
    '## Figures',
    '',
    markdownTable(figures.filter((f) => f.group !== 'fixed' && f.group !== 'limits')),
    '',
    '- UDP: closed loop, 8 datagrams in flight per association, round trips per second through the proxy to a UDP echo.',
    '- Added latency: 64-byte datagrams at a fixed 2000/s on one association; the proxied round-trip percentile of each run minus the median direct one (the "direct" column is the direct round trip itself). The p99 of a few thousand samples on a shared machine is noisy.',
    '- TCP echo: bulk writes of 16 KiB through CONNECT tunnels to a TCP echo, at most 1 MiB unanswered per tunnel; bytes echoed back per second.',
    '- New sessions: 8 clients each looping connect, greeting, CONNECT, 32-byte echo, close.',
    `- Memory: Pss summed over the server's process tree (/proc/PID/smaps_rollup) with ${memorySamples[0]?.count ?? '—'} idle associations open, each having relayed one datagram, minus the Pss before; `
      + 'Pss counts pages shared between Dante\'s forked processes once. Target: ≤ 4 KiB for socksgate.',
    '',
    ...(figures.some((f) => f.group === 'fixed') ? [
      '## Fixed-port mode',
      '',
      `socksgate with \`--udp-port\` (TCP and UDP on one port, as behind an L4 load balancer) and, beside it, in its default mode, both with \`--workers ${FIXED_WORKERS}\`; `
        + 'the same generator runs as above (512-byte datagrams, 8 in flight per association, each association declaring its UDP address) and the latency run with these peers. '
        + '"Steered" is the share of client datagrams that reached a worker other than their association\'s and were passed on to it (socksgate_udp_steered_total against '
        + 'socksgate_udp_datagrams_total{direction="client_to_proxy"}, over all runs).',
      '',
      fixedPortTable(figures.filter((f) => f.group === 'fixed')),
      '',
    ] : []),
    ...(figures.some((f) => f.group === 'limits') ? [
      '## Limits',
      '',
      'socksgate (default workers) with a users file, and `limits.user.udpPacketsPerSecond` 1,000,000 and `limits.user.udpBytesPerSecond` 1,000,000,000 set far above '
        + 'the traffic, so that they never refuse a datagram, leased from the local store (the primary) and from a Redis server on loopback; against the same login with no '
        + 'limits. The same generator runs as above (512-byte datagrams, 8 in flight per association), logging in as one user. "Store requests" are the Redis server\'s '
        + 'script calls (leases, session claims, renewals) during each run.',
      '',
      limitsTable(figures.filter((f) => f.group === 'limits')),
      '',
    ] : []),
    '## The generator is not the bottleneck',
    '',
    'The "direct" column is the same generator against the same echo targets with no proxy in between. For the UDP '
      + `figures, generator and echo poll for up to ${DIRECT_SPIN_US} µs before they sleep there (spin=${DIRECT_SPIN_US}): at one association two threads that `
      + 'sleep between datagrams are bound by how fast the machine wakes a thread, not by CPU, and polling shows what they can '
      + 'do at most. Against the servers they sleep at once, so that no polling takes CPU from the server under test.',
    '',
    ...headroom.map((h) => `- ${h}`),
    '',
  ];
  if (memorySamples.length > 0) {
    md.push('## Memory samples', '', '| server | associations | Pss idle KiB | Pss loaded KiB | VmRSS idle KiB | VmRSS loaded KiB | processes | KiB/assoc | errors |', '|---|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const m of memorySamples) md.push(`| ${m.server} | ${m.hold.open} | ${m.idlePssKiB} | ${m.loadedPssKiB} | ${m.idleRssKiB} | ${m.loadedRssKiB} | ${m.processes} | ${m.perAssociationKiB.toFixed(2)} | ${m.hold.errors}${m.hold.lastError ? ` (${m.hold.lastError})` : ''} |`);
    md.push('');
  }
  if (nofile < 120_000) {
    md.push(`Note: RLIMIT_NOFILE here cannot go above ${nofile} (raising the hard limit needs CAP_SYS_RESOURCE), so each process holds at most about that many `
      + 'sockets: memory is measured with as many associations as fit (each server holds two sockets per association: the control connection and '
      + 'the relay socket), and the 50,000-association check runs socksgate with enough workers that each stays under the limit (each worker '
      + 'process has its own), rather than its default of one per core.', '');
  }
  if (errors.length > 0) md.push('## Errors during the run', '', ...errors.map((e) => `- ${e}`), '');
  writeFileSync(`${dir}latest.md`, md.join('\n'));
  writeFileSync(`${dir}latest.svg`, svgPlot(figures, `socksgate, v2ray, microsocks as a ratio to Dante (${when})`));
  writeFileSync(`${dir}latest.json`, `${JSON.stringify({ when, options: { ...o, only: [...o.only] }, nofile, figures, memorySamples, scaleResults, errors }, null, 2)}\n`);
  log('\n' + md.slice(5, 6 + figures.length + scaleResults.length).join('\n'));
  log('written to bench/results/latest.md, latest.svg, latest.json');
}

let ending = false;
async function end(code: number): Promise<never> {
  if (!ending) {
    ending = true;
    await stopAll().catch(() => undefined);
    removeNamespace();
    removeTempDirs();
  }
  process.exit(code);
}
process.on('exit', killAllNow);
process.on('SIGINT', () => void end(130));
process.on('SIGTERM', () => void end(143));
main().then(() => end(0), (e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  return end(1);
});
