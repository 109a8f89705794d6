import { limitsFor, type QuotaSettings } from '../policy/quota.js';
import type { QuotaLimits, UserUsage } from '../policy/quota-ledger.js';
import { quotaPeriod, type QuotaPeriod } from '../policy/quota-period.js';

/** One user's line of `GET /users/usage`: bytes this period, the quotas, what is left of each (null: no such quota). */
export interface UsageRow {
  readonly user: string;
  readonly up: number;
  readonly down: number;
  readonly total: number;
  readonly quota: QuotaLimits | null;
  readonly remaining: { readonly total: number | null; readonly upload: number | null; readonly download: number | null };
  readonly exhausted: boolean;
}

/** What `GET /users/usage` answers (and `socksgate users usage` prints). */
export interface UsageReport {
  readonly period: { readonly kind: string; readonly timeZone: string; readonly start: string; readonly end: string };
  readonly onExhausted: string;
  readonly users: UsageRow[];
}

/** Where the figures of a period are read: the fleet's store, the primary's ledger or this process'. */
export type UsageReader = (period: QuotaPeriod) => Promise<UserUsage[]>;

/** The report for `now`: every user with figures in the store, and every user quotas.users names. */
export async function usageReport(settings: QuotaSettings, read: UsageReader, now = Date.now()): Promise<UsageReport> {
  const period = quotaPeriod(now, settings.period, settings.timeZone);
  const byUser = new Map<string, UserUsage>();
  for (const u of await read(period)) byUser.set(u.user, u);
  for (const user of Object.keys(settings.users)) if (!byUser.has(user)) byUser.set(user, { user, up: 0, down: 0 });
  const users = [...byUser.values()]
    .sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0))
    .map(({ user, up, down }): UsageRow => {
      const quota = limitsFor(settings, user);
      const left = (limit: number | undefined, used: number): number | null => (limit ? Math.max(0, limit - used) : null);
      const remaining = { total: left(quota?.total, up + down), upload: left(quota?.upload, up), download: left(quota?.download, down) };
      const exhausted = Object.values(remaining).some((r) => r === 0);
      return { user, up, down, total: up + down, quota, remaining, exhausted };
    });
  return {
    period: { kind: period.kind, timeZone: period.timeZone, start: new Date(period.start).toISOString(), end: new Date(period.end).toISOString() },
    onExhausted: settings.onExhausted,
    users,
  };
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** Bytes for people: "1.5 GiB", "512 B". */
export function formatBytes(n: number): string {
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${UNITS[i]}`;
}

/** The report as the CLI prints it: one line per user. */
export function usageTable(report: UsageReport): string {
  const head = `period: ${report.period.kind} from ${report.period.start} to ${report.period.end} (${report.period.timeZone}); on exhaustion: ${report.onExhausted}`;
  const rows = [['USER', 'UP', 'DOWN', 'TOTAL', 'QUOTA', 'REMAINING']];
  for (const u of report.users) {
    const quota = u.quota ? (['total', 'upload', 'download'] as const).filter((k) => u.quota![k] > 0).map((k) => `${k} ${formatBytes(u.quota![k])}`).join(', ') : '-';
    const remaining = (['total', 'upload', 'download'] as const)
      .filter((k) => u.remaining[k] !== null)
      .map((k) => `${k} ${formatBytes(u.remaining[k]!)}`)
      .join(', ');
    rows.push([u.user, formatBytes(u.up), formatBytes(u.down), formatBytes(u.total), quota, (remaining || '-') + (u.exhausted ? ' (exhausted)' : '')]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  '));
  return [head, ...lines].join('\n') + '\n';
}
