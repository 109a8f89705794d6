import type { QuotaPeriod } from './quota-period.js';

/** Which way bytes go: 0 client → destination (upload), 1 destination → client (download). */
export type QuotaDirection = 0 | 1;
export const UP: QuotaDirection = 0;
export const DOWN: QuotaDirection = 1;

/** One user's quotas for a period, in bytes; 0 is none. */
export interface QuotaLimits {
  readonly total: number;
  readonly upload: number;
  readonly download: number;
}

/** Which of a user's quotas ran out. */
export type QuotaName = 'total' | 'upload' | 'download';

/** The bytes a user's quota has handed out in a period (used, plus what processes hold unused). */
export interface QuotaUse {
  readonly up: number;
  readonly down: number;
}

/** A store's answer to a take: bytes granted, and the period's figures after it. */
export interface QuotaGrant extends QuotaUse {
  readonly granted: number;
}

/** One user's usage in a period, as the admin endpoint lists it. */
export interface UserUsage extends QuotaUse {
  readonly user: string;
}

/** Bytes `direction` may still take under `limits` after `up` and `down` (Infinity: no quota applies). */
export function roomFor(limits: QuotaLimits, direction: QuotaDirection, up: number, down: number): number {
  let room = Number.POSITIVE_INFINITY;
  if (limits.total > 0) room = limits.total - up - down;
  const own = direction === UP ? limits.upload : limits.download;
  if (own > 0) room = Math.min(room, own - (direction === UP ? up : down));
  return Math.max(0, room);
}

/** The quota that leaves `direction` no room after `use`, or null. */
export function exhaustedBy(limits: QuotaLimits, direction: QuotaDirection, use: QuotaUse): QuotaName | null {
  if (limits.total > 0 && use.up + use.down >= limits.total) return 'total';
  if (direction === UP && limits.upload > 0 && use.up >= limits.upload) return 'upload';
  if (direction === DOWN && limits.download > 0 && use.down >= limits.download) return 'download';
  return null;
}

/**
 * Usage per user and period in memory: the primary's for `limits.store: local`, or a single
 * process' own. Takes are checked against the quota, so what is handed out never passes it
 * (forced takes record bytes already relayed). Periods that have ended are forgotten.
 */
export class QuotaLedger {
  private readonly entries = new Map<string, { user: string; period: string; end: number; up: number; down: number }>();

  private sweptAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly now: () => number = Date.now) {}

  take(user: string, period: QuotaPeriod, limits: QuotaLimits, direction: QuotaDirection, want: number, force: boolean): QuotaGrant {
    this.forgetEnded();
    const id = `${period.key} ${user}`;
    let entry = this.entries.get(id);
    if (entry === undefined) this.entries.set(id, (entry = { user, period: period.key, end: period.end, up: 0, down: 0 }));
    const granted = force ? want : Math.max(0, Math.min(want, Math.floor(roomFor(limits, direction, entry.up, entry.down))));
    if (direction === UP) entry.up += granted;
    else entry.down += granted;
    return { granted, up: entry.up, down: entry.down };
  }

  giveBack(user: string, period: QuotaPeriod, direction: QuotaDirection, bytes: number): void {
    const entry = this.entries.get(`${period.key} ${user}`);
    if (entry === undefined) return;
    if (direction === UP) entry.up = Math.max(0, entry.up - bytes);
    else entry.down = Math.max(0, entry.down - bytes);
  }

  usage(period: QuotaPeriod): UserUsage[] {
    this.forgetEnded();
    const out: UserUsage[] = [];
    for (const entry of this.entries.values()) if (entry.period === period.key) out.push({ user: entry.user, up: entry.up, down: entry.down });
    return out;
  }

  private forgetEnded(): void {
    const now = this.now();
    if (now < this.sweptAt + 1000) return;
    this.sweptAt = now;
    for (const [id, entry] of this.entries) if (entry.end <= now) this.entries.delete(id);
  }
}
