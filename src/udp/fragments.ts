import type { SocksAddress } from 'socksgate-client/protocol';
import type { DropReason } from './stats.js';

/** Bytes of fragments held by every queue of one server, against a cap. */
export class ReassemblyBudget {
  used = 0;
  constructor(readonly limit: number) {}
}

export interface Reassembled {
  readonly address: SocksAddress;
  readonly payload: Buffer;
}

/**
 * RFC 1928 §7 reassembly for one association. FRAG 1..127 is the position and the high-order bit
 * marks the last fragment. Fragments must arrive in order: a lower FRAG than the highest so far
 * abandons the sequence (and a FRAG of 1 starts a new one), as does a gap, a change of destination,
 * or going over the memory limits. The timer starts with a sequence's first fragment.
 */
export class FragmentQueue {
  private parts: Buffer[] = [];
  private bytes = 0;
  private highest = 0;
  private address: SocksAddress | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly timeoutMs: number,
    private readonly limit: number,
    private readonly budget: ReassemblyBudget,
    /** Told how many fragments were dropped, and why. */
    private readonly onDrop: (reason: DropReason, count: number) => void,
  ) {}

  get pending(): number {
    return this.parts.length;
  }

  /** Takes one fragment; returns the whole datagram when this fragment completes it. */
  add(frag: number, address: SocksAddress, data: Buffer): Reassembled | null {
    const position = frag & 0x7f;
    const last = (frag & 0x80) !== 0;
    if (position === 0) {
      // 0x80 alone: "last" with no position is not a valid fragment.
      this.onDrop('fragment-abandoned', 1);
      return null;
    }
    if (this.parts.length > 0) {
      if (position <= this.highest) this.abandon('fragment-abandoned');
      else if (position !== this.highest + 1 || !sameAddress(address, this.address!)) {
        this.abandon('fragment-abandoned');
        this.onDrop('fragment-abandoned', 1);
        return null;
      }
    }
    if (this.parts.length === 0 && position !== 1) {
      this.onDrop('fragment-abandoned', 1);
      return null;
    }
    if (this.bytes + data.length > this.limit || this.budget.used + data.length > this.budget.limit) {
      this.abandon('fragment-abandoned');
      this.onDrop('fragment-abandoned', 1);
      return null;
    }
    if (this.parts.length === 0) {
      this.address = address;
      this.timer = setTimeout(() => this.abandon('fragment-timeout'), this.timeoutMs);
    }
    this.parts.push(data);
    this.bytes += data.length;
    this.budget.used += data.length;
    this.highest = position;
    if (!last) return null;
    const whole = { address: this.address!, payload: Buffer.concat(this.parts, this.bytes) };
    this.reset();
    return whole;
  }

  /** Drops whatever is queued (the association is closing). */
  close(): void {
    this.reset();
  }

  private abandon(reason: DropReason): void {
    const count = this.parts.length;
    this.reset();
    if (count > 0) this.onDrop(reason, count);
  }

  private reset(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.budget.used -= this.bytes;
    this.parts = [];
    this.bytes = 0;
    this.highest = 0;
    this.address = null;
  }
}

function sameAddress(a: SocksAddress, b: SocksAddress): boolean {
  return a.port === b.port && a.host === b.host && a.type === b.type;
}
