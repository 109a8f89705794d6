import type { ParseResult } from './parse.js';

/**
 * Collects bytes from a stream until a parser can take a whole message. Clients may pipeline
 * greeting, credentials and request in one write, or dribble one byte at a time; both work.
 */
export class ByteReader {
  private pending: Buffer = Buffer.alloc(0);

  get length(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
  }

  /** Runs `parser` on the pending bytes and consumes what it used when it succeeds. */
  read<T>(parser: (buf: Buffer) => ParseResult<T>): ParseResult<T> {
    const result = parser(this.pending);
    if (result.status === 'ok') this.pending = this.pending.subarray(result.size);
    return result;
  }

  /** Hands over whatever is left (data pipelined after the request) and empties the reader. */
  take(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}
