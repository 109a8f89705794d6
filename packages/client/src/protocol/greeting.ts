import { SOCKS_VERSION, type MethodCode } from './constants.js';
import { SocksError } from './errors.js';
import { fail, MORE, ok, type ParseResult } from './parse.js';

/** RFC 1928 §3: the client's version identifier/method selection message. */
export interface Greeting {
  readonly methods: readonly number[];
}

export function parseGreeting(buf: Buffer): ParseResult<Greeting> {
  if (buf.length < 1) return MORE;
  if (buf[0] !== SOCKS_VERSION) {
    const what = buf[0] === 0x04 ? 'SOCKS4 is not supported' : `version byte 0x${(buf[0] ?? 0).toString(16)} is not 0x05`;
    return fail(new SocksError('ERR_VERSION', `not a SOCKS5 greeting: ${what}`));
  }
  if (buf.length < 2) return MORE;
  const count = buf[1] as number;
  if (buf.length < 2 + count) return MORE;
  return ok({ methods: [...buf.subarray(2, 2 + count)] }, 2 + count);
}

export function encodeGreeting(methods: readonly number[]): Buffer {
  if (methods.length === 0 || methods.length > 255) {
    throw new SocksError('ERR_METHODS', `a greeting offers 1 to 255 methods, got ${methods.length}`);
  }
  return Buffer.from([SOCKS_VERSION, methods.length, ...methods]);
}

/** The server's METHOD selection message. */
// One per method: replies are only ever written, never changed, so every session shares them.
const SELECTIONS = new Map<number, Buffer>();

export function encodeMethodSelection(method: MethodCode): Buffer {
  let reply = SELECTIONS.get(method);
  if (reply === undefined) SELECTIONS.set(method, (reply = Buffer.from([SOCKS_VERSION, method])));
  return reply;
}

export function parseMethodSelection(buf: Buffer): ParseResult<number> {
  if (buf.length < 2) return buf.length === 1 && buf[0] !== SOCKS_VERSION ? badVersion(buf[0]) : MORE;
  if (buf[0] !== SOCKS_VERSION) return badVersion(buf[0]);
  return ok(buf[1] as number, 2);
}

function badVersion(version: number | undefined): ParseResult<never> {
  return fail(new SocksError('ERR_VERSION', `server answered with version 0x${(version ?? 0).toString(16)}, not 0x05: is it a SOCKS5 proxy?`));
}

