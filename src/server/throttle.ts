import { Transform, type TransformCallback } from 'node:stream';
import type { TokenBucket } from '../policy/limits.js';

// A debt still there is checked again after at least this long (it is paid by leases, not by the clock).
const MIN_RECHECK_MS = 5;

/**
 * Paces a byte stream to the slowest of its token buckets (shared with every other stream of the
 * same client or user). It wraps a relay's pipe; backpressure does the rest.
 */
export class Throttle extends Transform {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly buckets: readonly TokenBucket[]) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let wait = 0;
    for (const bucket of this.buckets) wait = Math.max(wait, bucket.reserve(chunk.length));
    if (wait <= 0) return callback(null, chunk);
    this.pass(chunk, callback, wait);
  }

  // The chunk passes once every bucket's debt is paid: a bucket leasing from a fleet may need longer than it first said.
  private pass(chunk: Buffer, callback: TransformCallback, wait: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      let more = 0;
      for (const bucket of this.buckets) more = Math.max(more, bucket.debtWait());
      if (more <= 0) return callback(null, chunk);
      this.pass(chunk, callback, Math.max(more, MIN_RECHECK_MS));
    }, Math.ceil(wait));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    callback(error);
  }
}
