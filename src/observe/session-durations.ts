import { Histogram, type Registry } from 'prom-client';

const NAME = 'socksgate_session_duration_seconds';
const HELP = 'How long sessions lasted, by command.';
export const SESSION_DURATION_BUCKETS: readonly number[] = [0.01, 0.1, 1, 10, 60, 600, 3600, 86400];

/** One command's observations: per bucket (not cumulative), their sum and count. */
interface Series {
  readonly command: string;
  readonly buckets: number[];
  sum: number;
  count: number;
}

/** A histogram's series as prom-client keeps it (what its zero() makes and its export reads). */
interface HistogramEntry {
  readonly labels: Record<string, string>;
  readonly bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

/**
 * socksgate_session_duration_seconds{command}: observed at every session's end as plain numbers,
 * handed to prom-client only when scraped. Its observe() builds and hashes a label key on every
 * call; this counts the same figures, in the same order, so the exported series (their order,
 * buckets, sums and counts) are exactly those observe() would have made.
 */
export class SessionDurations {
  // In the order of first observation: prom-client exports series in the order they were made.
  private readonly series = new Map<string, Series>();

  constructor(registry: Registry) {
    const series = this.series;
    new Histogram({
      name: NAME,
      help: HELP,
      labelNames: ['command'],
      buckets: [...SESSION_DURATION_BUCKETS],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of series.values()) this.zero({ command: s.command });
        const entries = (this as unknown as { hashMap: Record<string, HistogramEntry> }).hashMap;
        for (const entry of Object.values(entries)) {
          const s = series.get(entry.labels.command!)!;
          for (let i = 0; i < SESSION_DURATION_BUCKETS.length; i++) entry.bucketValues[SESSION_DURATION_BUCKETS[i]!] = s.buckets[i]!;
          entry.sum = s.sum;
          entry.count = s.count;
        }
      },
    });
  }

  /** A session of `command` lasted `seconds` (finite, as a clock difference is). */
  observe(command: string, seconds: number): void {
    let s = this.series.get(command);
    if (s === undefined) {
      s = { command, buckets: SESSION_DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.series.set(command, s);
    }
    // The first bucket whose upper bound is not below it; above the last, only +Inf (the count) has it.
    const bounds = SESSION_DURATION_BUCKETS;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    if (i < bounds.length) s.buckets[i]!++;
    s.sum += seconds;
    s.count++;
  }
}
