import { addressSize, parseAddress, writeAddress, type SocksAddress } from './address.js';
import { SocksError } from './errors.js';
import { fail, ok, type ParseResult } from './parse.js';

/** RFC 1928 §7: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT, then DATA. */
export interface UdpHeader {
  readonly fragment: number;
  readonly address: SocksAddress;
}

/**
 * Parses the header of one whole datagram; `size` is the offset of DATA. A datagram is never
 * "incomplete": a short one is malformed.
 */
export function parseUdpHeader(datagram: Buffer): ParseResult<UdpHeader> {
  if (datagram.length < 4) return fail(truncated(datagram.length));
  const address = parseAddress(datagram, 3);
  if (address.status === 'more') return fail(truncated(datagram.length));
  if (address.status === 'error') return address;
  return ok({ fragment: datagram[2] as number, address: address.value }, 3 + address.size);
}

export function udpHeaderSize(address: SocksAddress): number {
  return 3 + addressSize(address);
}

/** Writes the header at `offset` of a caller's buffer (the relay reuses one); returns where DATA goes. */
export function writeUdpHeader(buf: Buffer, offset: number, address: SocksAddress, fragment = 0): number {
  buf[offset] = 0;
  buf[offset + 1] = 0;
  buf[offset + 2] = fragment;
  return writeAddress(buf, offset + 3, address);
}

/** Header and payload in one new Buffer. */
export function encodeUdpDatagram(address: SocksAddress, payload: Uint8Array, fragment = 0): Buffer {
  const buf = Buffer.allocUnsafe(udpHeaderSize(address) + payload.length);
  const at = writeUdpHeader(buf, 0, address, fragment);
  buf.set(payload, at);
  return buf;
}

function truncated(length: number): SocksError {
  return new SocksError('ERR_UDP_TRUNCATED', `UDP datagram of ${length} bytes ends inside its SOCKS header`);
}
