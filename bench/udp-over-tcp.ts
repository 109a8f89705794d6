// npm run bench:uot — UDP ASSOCIATE against UDP over TCP, with packet loss induced by nftables in a
// network namespace of its own (this kernel has no netem). Bounded: a few seconds per case.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SECONDS = Number(process.env.SOCKSGATE_BENCH_SECONDS ?? 5);
const LOSSES = [0, 1, 5];
const worker = fileURLToPath(new URL('./uot-worker.js', import.meta.url));
const ns = `sgbench${process.pid}`;
const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'inherit' });

function inNamespace(loss: number): Array<Record<string, number | string>> {
  ip('netns', 'add', ns);
  try {
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    if (loss > 0) {
      const nft = (...args: string[]): void => void execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { stdio: 'inherit' });
      nft('add', 'table', 'inet', 'loss');
      nft('add', 'chain', 'inet', 'loss', 'out', '{ type filter hook output priority 0; }');
      // Every packet on the namespace's loopback (UDP datagrams and TCP segments alike) is dropped with this probability.
      nft('add', 'rule', 'inet', 'loss', 'out', 'numgen', 'random', 'mod', '1000', '<', String(loss * 10), 'drop');
    }
    const run = spawnSync('ip', ['netns', 'exec', ns, process.execPath, worker, String(SECONDS)], { encoding: 'utf8', timeout: (SECONDS * 2 + 30) * 1000 });
    if (run.status !== 0) throw new Error(`worker failed: ${run.stderr}`);
    return JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Array<Record<string, number | string>>;
  } finally {
    ip('netns', 'del', ns);
  }
}

const rows: string[] = [];
for (const loss of LOSSES) {
  for (const r of inNamespace(loss)) {
    rows.push(`| ${loss}% | ${r.transport === 'udp' ? 'UDP ASSOCIATE' : 'UDP over TCP'} | ${r.perSecond} | ${r.p50ms} | ${r.p99ms} | ${r.maxMs} | ${r.lostPercent}% |`);
    process.stdout.write(`loss ${loss}% ${String(r.transport).padEnd(3)}: ${r.perSecond}/s p50 ${r.p50ms} ms p99 ${r.p99ms} ms max ${r.maxMs} ms lost ${r.lostPercent}%\n`);
  }
}
const table = [
  `# UDP ASSOCIATE vs UDP over TCP under packet loss`,
  '',
  `Closed loop, 16 datagrams of 512 bytes in flight, ${SECONDS} s per case, client → socksgate → UDP echo on one`,
  'namespace loopback; nftables drops the given share of every packet (UDP and TCP alike). A datagram with no',
  'answer within 300 ms counts as lost, late ones included (and its slot is reused). One run on a shared machine: read the shape, not the digits.',
  '',
  '| loss | transport | round trips/s | p50 ms | p99 ms | max ms | lost |',
  '|---|---|---|---|---|---|---|',
  ...rows,
  '',
].join('\n');
mkdirSync(fileURLToPath(new URL('../../bench/results/', import.meta.url)), { recursive: true });
writeFileSync(fileURLToPath(new URL('../../bench/results/udp-over-tcp.md', import.meta.url)), table);
process.stdout.write('written to bench/results/udp-over-tcp.md\n');
