// Pure helpers of `npm run bench`: medians, ratios to Dante, target checks, the Markdown table and the SVG plot.
// No I/O here, so test/bench/ can check them directly.

export const SERVERS = ['socksgate', 'dante', 'v2ray', 'microsocks'] as const;
export type ServerName = (typeof SERVERS)[number];
// 'socksgate-default' is socksgate in its default mode, measured beside fixed-port mode in the fixed-port group.
// 'minimal-c' is the generator's own minimal CONNECT server (socksload connect-server), in the new-sessions figure.
export type Peer = ServerName | 'direct' | 'socksgate-default' | 'socksgate-login' | 'minimal-c';

/** One figure: its samples per peer (one per run), how to read it, and the target as a ratio to Dante. */
export interface Figure {
  id: string;
  group: 'udp' | 'latency' | 'tcp' | 'rate' | 'memory' | 'fixed' | 'limits';
  label: string;
  unit: string;
  /** true when more is better (datagrams/s), false when less is (latency, memory). */
  higherIsBetter: boolean;
  /** socksgate / Dante must be ≥ this (higherIsBetter) or ≤ this (otherwise); absent: no target. */
  target?: number;
  /** What `target` compares socksgate with, when not Dante (the limits group: socksgate without limits). */
  baseline?: Peer;
  /** An absolute bound for socksgate (memory: KiB per association). */
  absoluteTarget?: number;
  samples: Partial<Record<Peer, number[]>>;
  /** Fixed-port group: per run, the client datagrams socksgate's workers passed on to a sibling, and all client datagrams. */
  steered?: { steered: number; total: number }[];
  /** Limits group with Redis: the store's script calls (leases, claims) in each run. */
  storeRequests?: number[];
  notes?: string[];
}

export function median(values: readonly number[]): number | undefined {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return undefined;
  const mid = finite.length >> 1;
  const upper = finite[mid]!;
  return finite.length % 2 === 1 ? upper : (finite[mid - 1]! + upper) / 2;
}

/** value / reference, or undefined when either is missing or the reference is not positive. */
export function ratio(value: number | undefined, reference: number | undefined): number | undefined {
  if (value === undefined || reference === undefined || !(reference > 0)) return undefined;
  return value / reference;
}

export function medianOf(figure: Figure, peer: Peer): number | undefined {
  return median(figure.samples[peer] ?? []);
}

export function ratioToDante(figure: Figure, peer: Peer): number | undefined {
  return ratio(medianOf(figure, peer), medianOf(figure, 'dante'));
}

/** socksgate's median over its baseline's (Dante's unless the figure names another). */
export function ratioToBaseline(figure: Figure): number | undefined {
  return ratio(medianOf(figure, 'socksgate'), medianOf(figure, figure.baseline ?? 'dante'));
}

const BASELINE_NAMES: Partial<Record<Peer, string>> = { dante: 'Dante', 'socksgate-login': 'no limits' };
const baselineName = (figure: Figure): string => BASELINE_NAMES[figure.baseline ?? 'dante'] ?? String(figure.baseline);

/** Turns round-trip samples into added latency: each server's sample minus the median direct round trip. */
export function addedLatency(figures: Figure[]): void {
  for (const f of figures) {
    const direct = median(f.samples.direct ?? []);
    if (direct === undefined) continue;
    for (const peer of [...SERVERS, 'socksgate-default' as const]) {
      const samples = f.samples[peer];
      if (samples) f.samples[peer] = samples.map((v) => v - direct);
    }
  }
}

export type Verdict = 'met' | 'not met' | 'no data' | 'no target';

export function verdict(figure: Figure): Verdict {
  if (figure.target === undefined && figure.absoluteTarget === undefined) return 'no target';
  const sg = medianOf(figure, 'socksgate');
  if (sg === undefined) return 'no data';
  let ok = true;
  if (figure.target !== undefined) {
    const r = ratioToBaseline(figure);
    if (r === undefined) return 'no data';
    ok &&= figure.higherIsBetter ? r >= figure.target : r <= figure.target;
  }
  if (figure.absoluteTarget !== undefined) ok &&= figure.higherIsBetter ? sg >= figure.absoluteTarget : sg <= figure.absoluteTarget;
  return ok ? 'met' : 'not met';
}

export function formatNumber(value: number | undefined): string {
  if (value === undefined) return '—';
  const abs = Math.abs(value);
  if (abs >= 100_000) return `${(value / 1000).toFixed(0)}k`;
  if (abs >= 10_000) return `${(value / 1000).toFixed(1)}k`;
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function formatRatio(value: number | undefined): string {
  return value === undefined ? '—' : `${value.toFixed(2)}×`;
}

function targetText(figure: Figure): string {
  const parts: string[] = [];
  if (figure.target !== undefined) parts.push(`${figure.higherIsBetter ? '≥' : '≤'} ${figure.target}× ${baselineName(figure)}`);
  if (figure.absoluteTarget !== undefined) parts.push(`${figure.higherIsBetter ? '≥' : '≤'} ${figure.absoluteTarget} ${figure.unit}`);
  return parts.join(', ') || '—';
}

/** The share of client datagrams passed on between workers, summed over the runs ('—' without data). */
export function steeredShare(figure: Figure): string {
  const runs = figure.steered ?? [];
  const steered = runs.reduce((n, r) => n + r.steered, 0), total = runs.reduce((n, r) => n + r.total, 0);
  return total > 0 ? `${((100 * steered) / total).toFixed(1)}% (${steered.toLocaleString('en')} of ${total.toLocaleString('en')})` : '—';
}

/** The fixed-port group: socksgate with --udp-port beside its default mode, Dante and the direct path. */
export function fixedPortTable(figures: readonly Figure[]): string {
  const head = '| figure | unit | direct | socksgate --udp-port | socksgate default | Dante | --udp-port ÷ Dante | default ÷ Dante | steered between workers | target | |';
  const rows = figures.map((f) => {
    const cells = [
      f.label,
      f.unit,
      formatNumber(medianOf(f, 'direct')),
      formatNumber(medianOf(f, 'socksgate')),
      formatNumber(medianOf(f, 'socksgate-default')),
      formatNumber(medianOf(f, 'dante')),
      formatRatio(ratioToDante(f, 'socksgate')),
      formatRatio(ratioToDante(f, 'socksgate-default')),
      steeredShare(f),
      targetText(f),
      verdict(f),
    ];
    return `| ${cells.join(' | ')} |`;
  });
  return [head, '|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|', ...rows].join('\n');
}

export function markdownTable(figures: readonly Figure[]): string {
  const head = '| figure | unit | direct | socksgate | Dante | v2ray | microsocks | socksgate ÷ Dante | v2ray ÷ Dante | target | |';
  const rows = figures.map((f) => {
    const cells = [
      f.label,
      f.unit,
      formatNumber(medianOf(f, 'direct')),
      ...SERVERS.map((s) => formatNumber(medianOf(f, s))),
      formatRatio(ratioToDante(f, 'socksgate')),
      formatRatio(ratioToDante(f, 'v2ray')),
      targetText(f),
      verdict(f),
    ];
    return `| ${cells.join(' | ')} |`;
  });
  return [head, '|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|', ...rows].join('\n');
}

export function summaryLine(figure: Figure): string {
  const r = ratioToBaseline(figure);
  const sg = formatNumber(medianOf(figure, 'socksgate'));
  const reference = formatNumber(medianOf(figure, figure.baseline ?? 'dante'));
  const v = verdict(figure);
  const mark = v === 'met' ? 'target met' : v === 'not met' ? 'target NOT met' : v;
  return `- ${figure.label}: socksgate ${sg} ${figure.unit} vs ${baselineName(figure)} ${reference} (${formatRatio(r)}); target ${targetText(figure)}: ${mark}.`;
}

/**
 * The new-sessions figure beside the least a CONNECT session can cost here: what a minimal C server made,
 * as a ratio to Dante, and socksgate's share of it. Null without that peer's samples.
 */
export function minimalServerLine(figure: Figure): string | null {
  const minimal = medianOf(figure, 'minimal-c');
  if (minimal === undefined) return null;
  const share = ratio(medianOf(figure, 'socksgate'), minimal);
  return `- ${figure.label}, beside a minimal C server (socksload connect-server: no checks, no logs, a thread per CPU): it made ${formatNumber(minimal)} ${figure.unit} `
    + `(${formatRatio(ratioToDante(figure, 'minimal-c'))} Dante); socksgate made ${share === undefined ? '—' : `${Math.round(share * 100)}%`} of it.`;
}

/** The limits group: socksgate with a per-user rate that never binds, against the same login without limits. */
export function limitsTable(figures: readonly Figure[]): string {
  const head = '| figure | unit | no limits | with the rate | ÷ no limits | store requests per run | target | |';
  const rows = figures.map((f) => {
    const cells = [
      f.label,
      f.unit,
      formatNumber(medianOf(f, 'socksgate-login')),
      formatNumber(medianOf(f, 'socksgate')),
      formatRatio(ratioToBaseline(f)),
      f.storeRequests?.length ? f.storeRequests.join(', ') : '—',
      targetText(f),
      verdict(f),
    ];
    return `| ${cells.join(' | ')} |`;
  });
  return [head, '|---|---|--:|--:|--:|---|---|---|', ...rows].join('\n');
}

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

const COLOURS: Record<ServerName, string> = { socksgate: '#1f77b4', dante: '#7f7f7f', v2ray: '#2ca02c', microsocks: '#d62728' };

/**
 * A grouped bar chart of each figure as a ratio to Dante (Dante = 1, the grey line), one bar per server, with the
 * target drawn as a short black tick on socksgate's bar. Bars are capped at `cap`; the value is written above each.
 */
export function svgPlot(figures: readonly Figure[], title: string, cap = 4): string {
  const plotted = figures.filter((f) => medianOf(f, 'dante') !== undefined);
  const servers = SERVERS.filter((s) => s !== 'dante');
  const barW = 14, gap = 18, groupW = servers.length * barW + gap;
  const left = 50, top = 40, height = 260, bottom = 150;
  // Room on the right for the last rotated label.
  const width = left + Math.max(1, plotted.length) * groupW + 140;
  const y = (r: number): number => top + height - (Math.min(r, cap) / cap) * height;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + height + bottom}" font-family="sans-serif" font-size="10">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14">${escapeXml(title)}</text>`,
  ];
  for (let t = 0; t <= cap; t++) {
    out.push(`<line x1="${left}" x2="${width - 10}" y1="${y(t)}" y2="${y(t)}" stroke="#eee"/>`);
    out.push(`<text x="${left - 6}" y="${y(t) + 3}" text-anchor="end">${t}×</text>`);
  }
  plotted.forEach((f, i) => {
    const x0 = left + i * groupW + gap / 2;
    servers.forEach((s, j) => {
      const r = ratioToDante(f, s);
      if (r === undefined) return;
      // For "less is better" figures the bar shows Dante ÷ server, so taller is better everywhere.
      const shown = f.higherIsBetter ? r : r > 0 ? 1 / r : cap;
      const x = x0 + j * barW;
      out.push(`<rect class="bar" x="${x}" y="${y(shown)}" width="${barW - 2}" height="${top + height - y(shown)}" fill="${COLOURS[s]}"><title>${escapeXml(`${f.label} ${s}: ${shown.toFixed(2)}`)}</title></rect>`);
      out.push(`<text x="${x + (barW - 2) / 2}" y="${y(shown) - 3}" text-anchor="middle" font-size="7">${shown.toFixed(1)}</text>`);
      if (s === 'socksgate' && f.target !== undefined) {
        const t = f.higherIsBetter ? f.target : 1 / f.target;
        out.push(`<line x1="${x - 2}" x2="${x + barW}" y1="${y(t)}" y2="${y(t)}" stroke="black" stroke-width="2"/>`);
      }
    });
    const lx = x0 + (servers.length * barW) / 2, ly = top + height + 8;
    out.push(`<text x="${lx}" y="${ly}" transform="rotate(60 ${lx} ${ly})">${escapeXml(f.label)}</text>`);
  });
  out.push(`<line x1="${left}" x2="${width - 10}" y1="${y(1)}" y2="${y(1)}" stroke="#7f7f7f" stroke-width="2" stroke-dasharray="4 2"/>`);
  servers.forEach((s, j) => {
    const x = left + j * 110;
    out.push(`<rect x="${x}" y="26" width="10" height="10" fill="${COLOURS[s]}"/><text x="${x + 14}" y="35">${s}</text>`);
  });
  out.push(`<text x="${left + servers.length * 110}" y="35">dashed: Dante = 1; black tick: target; latency and memory drawn as Dante ÷ server</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
