/** What a quota counts over: from local midnight of a day, of a Monday, or of the 1st of a month. */
export type QuotaPeriodKind = 'day' | 'week' | 'month';

/** One period of a quota: [start, end) in ms since the epoch, and a name for store keys. */
export interface QuotaPeriod {
  readonly kind: QuotaPeriodKind;
  readonly timeZone: string;
  readonly start: number;
  readonly end: number;
  /** "month:2026-12-01:UTC": the same for every process that counts it, whatever its clock. */
  readonly key: string;
}

const DAY_MS = 86_400_000;
const formats = new Map<string, Intl.DateTimeFormat>();

function formatFor(timeZone: string): Intl.DateTimeFormat {
  let format = formats.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formats.set(timeZone, format);
  }
  return format;
}

/** The wall clock of `timeZone` at instant `t`. */
export function localParts(t: number, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  const parts: Record<string, number> = {};
  for (const part of formatFor(timeZone).formatToParts(t)) if (part.type !== 'literal') parts[part.type] = Number(part.value);
  return { year: parts.year!, month: parts.month!, day: parts.day!, hour: parts.hour!, minute: parts.minute!, second: parts.second! };
}

/** A local date as a number that sorts like the date (days since the epoch of the proleptic calendar). */
function dateNumber(year: number, month: number, day: number): number {
  return Math.floor(Date.UTC(year, month - 1, day) / DAY_MS);
}

function localDate(t: number, timeZone: string): number {
  const p = localParts(t, timeZone);
  return dateNumber(p.year, p.month, p.day);
}

/**
 * The first instant whose local date in `timeZone` is `date` (days since the epoch) or later: local
 * midnight, or the end of a DST gap that skips midnight. Found by bisection (offsets stay within ±1 day).
 */
function startOfLocalDate(date: number, timeZone: string, before = Number.POSITIVE_INFINITY): number {
  let low = date * DAY_MS - 2 * DAY_MS;
  let high = Math.min(date * DAY_MS + 2 * DAY_MS, before);
  // Invariant: localDate(low) < date <= localDate(high). Zone transitions fall on whole seconds.
  while (high - low > 1000) {
    const mid = low + Math.floor((high - low) / 2000) * 1000;
    if (localDate(mid, timeZone) >= date) high = mid;
    else low = mid;
  }
  return high;
}

/** The period of `kind` in `timeZone` that instant `t` falls in. */
export function quotaPeriod(t: number, kind: QuotaPeriodKind, timeZone: string): QuotaPeriod {
  const p = localParts(t, timeZone);
  let first: number;
  let next: number;
  if (kind === 'day') {
    first = dateNumber(p.year, p.month, p.day);
    next = first + 1;
  } else if (kind === 'week') {
    const today = dateNumber(p.year, p.month, p.day);
    // Day 0 of the epoch (1970-01-01) was a Thursday: Monday is (n + 3) % 7 === 0.
    first = today - ((((today + 3) % 7) + 7) % 7);
    next = first + 7;
  } else {
    first = dateNumber(p.year, p.month, 1);
    next = p.month === 12 ? dateNumber(p.year + 1, 1, 1) : dateNumber(p.year, p.month + 1, 1);
  }
  let start = startOfLocalDate(first, timeZone);
  // A zone whose clock goes back across midnight (00:30 → 23:30 the day before) has two such instants: the one before t.
  if (start > t) start = startOfLocalDate(first, timeZone, t);
  const end = startOfLocalDate(next, timeZone);
  const day = new Date(first * DAY_MS).toISOString().slice(0, 10);
  return { kind, timeZone, start, end, key: `${kind}:${day}:${timeZone}` };
}
