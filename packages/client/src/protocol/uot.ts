import { addressSize, parseAddress, writeAddress, type SocksAddress } from './address.js';
import { SocksError } from './errors.js';
import { fail, MORE, ok, type ParseResult } from './parse.js';
import { ByteReader } from './reader.js';

/**
 * UDP over TCP frames, hev-socks5's "FWD UDP" (request command 0x05), the same both ways:
 *
 *   DATLEN(2, big-endian: payload bytes)  HDRLEN(1: 3 + address bytes)  ATYP ADDR PORT  DATA
 *
 * Client to server the address is the destination; server to client it is the real source.
 * Frames follow each other on the stream with no padding (docs/udp-over-tcp.md).
 */
export interface UotFrame {
  readonly address: SocksAddress;
  readonly payload: Buffer;
}

/** Largest payload a frame can carry (DATLEN is 16 bits). */
export const UOT_MAX_PAYLOAD = 0xffff;

export function parseUotFrame(buf: Buffer): ParseResult<UotFrame> {
  if (buf.length < 5) return MORE;
  const dataLength = buf.readUInt16BE(0);
  const headerLength = buf[2] as number;
  if (headerLength < 5) return fail(new SocksError('ERR_UOT_HEADER', `UDP-over-TCP frame header length ${headerLength} is shorter than any address`));
  const address = parseAddress(buf, 3);
  if (address.status === 'error') return address;
  if (address.status === 'ok' && 3 + address.size !== headerLength) {
    return fail(new SocksError('ERR_UOT_HEADER', `UDP-over-TCP frame header length ${headerLength} does not match its address (${3 + address.size} bytes)`));
  }
  if (buf.length < headerLength + dataLength) return MORE;
  if (address.status !== 'ok') {
    return fail(new SocksError('ERR_UOT_HEADER', `UDP-over-TCP frame header length ${headerLength} is shorter than its address`));
  }
  return ok({ address: address.value, payload: buf.subarray(headerLength, headerLength + dataLength) }, headerLength + dataLength);
}

export function uotHeaderSize(address: SocksAddress): number {
  return 3 + addressSize(address);
}

/** A whole frame in one new Buffer. */
export function encodeUotFrame(address: SocksAddress, payload: Uint8Array): Buffer {
  if (payload.length > UOT_MAX_PAYLOAD) {
    throw new SocksError('ERR_UOT_SIZE', `a UDP-over-TCP frame carries at most ${UOT_MAX_PAYLOAD} bytes, got ${payload.length}`);
  }
  const header = uotHeaderSize(address);
  const buf = Buffer.allocUnsafe(header + payload.length);
  buf.writeUInt16BE(payload.length, 0);
  buf[2] = header;
  writeAddress(buf, 3, address);
  buf.set(payload, header);
  return buf;
}

/**
 * Splits a byte stream into frames, wherever TCP cut it. `push` hands each whole frame to
 * `onFrame` and returns null, or the error of a broken frame, after which the stream is unusable
 * (there is no way to find the next frame).
 */
export class UotFrameReader {
  private readonly reader = new ByteReader();
  private broken: SocksError | null = null;

  constructor(private readonly onFrame: (frame: UotFrame) => void) {}

  push(chunk: Buffer): SocksError | null {
    if (this.broken) return this.broken;
    this.reader.push(chunk);
    for (;;) {
      const frame = this.reader.read(parseUotFrame);
      if (frame.status === 'more') return null;
      if (frame.status === 'error') {
        this.broken = frame.error;
        return frame.error;
      }
      this.onFrame(frame.value);
    }
  }
}
