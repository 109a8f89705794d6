import { Transform, type TransformCallback } from 'node:stream';
import type { TokenBucket } from '../policy/limits.js';
import type { QuotaAccount, QuotaWatcher } from '../policy/quota.js';
import { QuotaBucket } from '../policy/quota-table.js';
import { DOWN, UP } from '../policy/quota-ledger.js';

// A debt still there is checked again after at least this long (it is paid by leases, not by the clock).
const MIN_RECHECK_MS = 5;

/** What a relay ends with when the user's quota ran out (limits `quotas.onExhausted: end`). */
export const QUOTA_EXHAUSTED = 'quota exhausted';

/**
 * Paces a byte stream to the slowest of its token buckets (shared with every other stream of the
 * same client or user), and spends its bytes from the user's quota, if any (`direction`: 'up' is
 * client → destination). It wraps a relay's pipe; backpressure does the rest.
 */
export class Throttle extends Transform implements QuotaWatcher {
  private timer: NodeJS.Timeout | null = null;
  private readonly buckets: readonly TokenBucket[];
  private readonly quota: QuotaAccount | null;
  private readonly way: 0 | 1;

  constructor(buckets: readonly TokenBucket[], direction: 'up' | 'down' = 'up') {
    super();
    const quota = buckets.find((b) => b instanceof QuotaBucket);
    this.quota = quota === undefined ? null : (quota as QuotaBucket).account;
    this.buckets = quota === undefined ? buckets : buckets.filter((b) => b !== quota);
    this.way = direction === 'up' ? UP : DOWN;
    this.quota?.watch(this);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let wait = 0;
    for (const bucket of this.buckets) wait = Math.max(wait, bucket.reserve(chunk.length));
    if (wait <= 0) return this.spend(chunk, callback);
    this.pass(chunk, callback, wait);
  }

  /** The user's quota ran out (end mode): the relay ends. */
  quotaRunOut(): void {
    this.destroy(new Error(QUOTA_EXHAUSTED));
  }

  // The chunk passes once every bucket's debt is paid: a bucket leasing from a fleet may need longer than it first said.
  private pass(chunk: Buffer, callback: TransformCallback, wait: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      let more = 0;
      for (const bucket of this.buckets) more = Math.max(more, bucket.debtWait());
      if (more <= 0) return this.spend(chunk, callback);
      this.pass(chunk, callback, Math.max(more, MIN_RECHECK_MS));
    }, Math.ceil(wait));
  }

  // Bytes the quota has on hand pass at once; the rest waits for the store's next chunk, or ends the relay at the quota.
  private spend(chunk: Buffer, callback: TransformCallback): void {
    const quota = this.quota;
    if (quota === null) return callback(null, chunk);
    const got = quota.take(this.way, chunk.length);
    if (got === chunk.length) return callback(null, chunk);
    if (got > 0) this.push(chunk.subarray(0, got));
    const rest = got > 0 ? chunk.subarray(got) : chunk;
    if (quota.short(this.way, () => (this.destroyed ? undefined : this.spend(rest, callback))) === 'end') callback(new Error(QUOTA_EXHAUSTED));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.quota?.unwatch(this);
    callback(error);
  }
}
