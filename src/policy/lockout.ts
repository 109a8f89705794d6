export interface LockoutOptions {
  /** Failures (within `windowMs`) after which every new attempt from the address waits first. */
  readonly slowAfter: number;
  /** Failures (within `windowMs`) after which the address is blocked for `blockMs`. */
  readonly blockAfter: number;
  readonly blockMs: number;
  readonly windowMs: number;
}

interface Record {
  failures: number;
  firstFailure: number;
  blockedUntil: number;
}

// Addresses remembered at most; the oldest are forgotten first.
const MAX_TRACKED = 100_000;

/**
 * Slows, then blocks, addresses that keep failing to log in. Every check is counted as a failure
 * before it runs and taken back when it succeeds, so guesses sent in parallel count at once.
 */
export class AuthLockout {
  private readonly records = new Map<string, Record>();

  constructor(
    readonly options: LockoutOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** Milliseconds a new attempt from `address` must wait, or -1 when the address is blocked. */
  delayFor(address: string): number {
    const record = this.fresh(address);
    if (!record) return 0;
    if (record.blockedUntil > this.now()) return -1;
    if (record.failures < this.options.slowAfter) return 0;
    return Math.min(250 * 2 ** (record.failures - this.options.slowAfter), 5000);
  }

  /** Records a failure; true when this failure blocks the address. */
  fail(address: string): boolean {
    let record = this.fresh(address);
    if (!record) {
      if (this.records.size >= MAX_TRACKED) this.records.delete(this.records.keys().next().value as string);
      record = { failures: 0, firstFailure: this.now(), blockedUntil: 0 };
      this.records.set(address, record);
    }
    record.failures++;
    if (record.failures >= this.options.blockAfter && record.blockedUntil <= this.now()) {
      record.blockedUntil = this.now() + this.options.blockMs;
      return true;
    }
    return false;
  }

  /**
   * A check that was counted as a failure in advance (see `fail`) succeeded: take that failure
   * back. An active block stays: a right password does not lift it.
   */
  succeed(address: string): void {
    const record = this.fresh(address);
    if (!record || record.blockedUntil > this.now()) return;
    if (--record.failures <= 0) this.records.delete(address);
  }

  /**
   * The fleet counted `failures` for `address` (the store's answer): blocks it here too when they
   * reach blockAfter, for blockMs from now. True when this blocks it.
   */
  fleetFailures(address: string, failures: number): boolean {
    if (failures < this.options.blockAfter || this.isBlocked(address)) return false;
    let record = this.fresh(address);
    if (!record) {
      if (this.records.size >= MAX_TRACKED) this.records.delete(this.records.keys().next().value as string);
      record = { failures: 0, firstFailure: this.now(), blockedUntil: 0 };
      this.records.set(address, record);
    }
    record.failures = Math.max(record.failures, failures);
    record.blockedUntil = this.now() + this.options.blockMs;
    return true;
  }

  isBlocked(address: string): boolean {
    return this.delayFor(address) < 0;
  }

  private fresh(address: string): Record | undefined {
    const record = this.records.get(address);
    if (!record) return undefined;
    const now = this.now();
    if (record.blockedUntil <= now && now - record.firstFailure > this.options.windowMs) {
      this.records.delete(address);
      return undefined;
    }
    return record;
  }
}
