import { addressSize, parseAddress, writeAddress, type SocksAddress } from './address.js';
import { describeCommand, isCommand, Reply, SOCKS_VERSION, type CommandCode, type ReplyCode } from './constants.js';
import { SocksError } from './errors.js';
import { fail, MORE, ok, type ParseResult } from './parse.js';

/** RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. */
export interface Request {
  readonly command: CommandCode;
  readonly destination: SocksAddress;
}

/** RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT. */
export interface ReplyMessage {
  readonly reply: number;
  readonly bound: SocksAddress;
}

export function parseRequest(buf: Buffer): ParseResult<Request> {
  if (buf.length < 1) return MORE;
  if (buf[0] !== SOCKS_VERSION) {
    return fail(new SocksError('ERR_VERSION', `request version 0x${(buf[0] ?? 0).toString(16)} is not 0x05`, Reply.GENERAL_FAILURE));
  }
  if (buf.length < 2) return MORE;
  const command = buf[1] as number;
  if (!isCommand(command)) {
    return fail(new SocksError('ERR_COMMAND', `${describeCommand(command)} (RFC 1928 defines connect, bind and udp; 0x05 is UDP over TCP)`, Reply.COMMAND_NOT_SUPPORTED));
  }
  // RSV (byte 2) is ignored: RFC 1928 reserves it, and rejecting stray values helps nobody.
  const address = parseAddress(buf, 3);
  if (address.status !== 'ok') return address;
  return ok({ command, destination: address.value }, 3 + address.size);
}

export function encodeRequest(command: CommandCode, destination: SocksAddress): Buffer {
  return encodeHeaderAndAddress(command, destination);
}

export function encodeReply(reply: ReplyCode, bound: SocksAddress): Buffer {
  return encodeHeaderAndAddress(reply, bound);
}

export function parseReply(buf: Buffer): ParseResult<ReplyMessage> {
  if (buf.length < 1) return MORE;
  if (buf[0] !== SOCKS_VERSION) {
    return fail(new SocksError('ERR_VERSION', `reply version 0x${(buf[0] ?? 0).toString(16)} is not 0x05`));
  }
  if (buf.length < 3) return MORE;
  const address = parseAddress(buf, 3);
  if (address.status !== 'ok') return address;
  return ok({ reply: buf[1] as number, bound: address.value }, 3 + address.size);
}

function encodeHeaderAndAddress(second: number, address: SocksAddress): Buffer {
  const buf = Buffer.allocUnsafe(3 + addressSize(address));
  buf[0] = SOCKS_VERSION;
  buf[1] = second;
  buf[2] = 0x00;
  writeAddress(buf, 3, address);
  return buf;
}
