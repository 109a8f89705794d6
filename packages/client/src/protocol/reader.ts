import type { ParseResult } from './parse.js';

/**
 * Collects bytes from a stream until a parser can take a whole message. Clients may pipeline
 * greeting, credentials and request in one write, or dribble one byte at a time; both work.
 */
// Shared by every empty reader: an idle session should hold no buffer of its own.
const EMPTY = Buffer.alloc(0);

export class ByteReader {
  private pending: Buffer = EMPTY;

  get length(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
  }

  /** Runs `parser` on the pending bytes and consumes what it used when it succeeds. */
  read<T>(parser: (buf: Buffer) => ParseResult<T>): ParseResult<T> {
    const result = parser(this.pending);
    if (result.status === 'ok') this.pending = result.size === this.pending.length ? EMPTY : this.pending.subarray(result.size);
    return result;
  }

  /** Copies the pending bytes into memory of their own (they may view a buffer that is reused). */
  keep(): void {
    if (this.pending.length > 0) this.pending = Buffer.from(this.pending);
  }

  /** Hands over whatever is left (data pipelined after the request) and empties the reader. */
  take(): Buffer {
    const rest = this.pending;
    this.pending = EMPTY;
    return rest;
  }
}
