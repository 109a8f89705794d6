import { AUTH_VERSION, AuthStatus } from './constants.js';
import { SocksError } from './errors.js';
import { fail, MORE, ok, type ParseResult } from './parse.js';

/** RFC 1929 username/password request. The password stays bytes: it is hashed, never printed. */
export interface Credentials {
  readonly username: string;
  readonly password: Buffer;
}

export function parseCredentials(buf: Buffer): ParseResult<Credentials> {
  if (buf.length < 1) return MORE;
  if (buf[0] !== AUTH_VERSION) {
    return fail(new SocksError('ERR_AUTH_VERSION', `username/password version 0x${(buf[0] ?? 0).toString(16)} is not 0x01 (RFC 1929)`));
  }
  if (buf.length < 2) return MORE;
  const userLength = buf[1] as number;
  if (buf.length < 2 + userLength + 1) return MORE;
  const passLength = buf[2 + userLength] as number;
  const size = 3 + userLength + passLength;
  if (buf.length < size) return MORE;
  return ok(
    {
      username: buf.toString('utf8', 2, 2 + userLength),
      password: Buffer.from(buf.subarray(3 + userLength, size)),
    },
    size,
  );
}

export function encodeCredentials(username: string, password: string | Buffer): Buffer {
  const user = Buffer.from(username, 'utf8');
  const pass = typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
  if (user.length < 1 || user.length > 255 || pass.length < 1 || pass.length > 255) {
    throw new SocksError(
      'ERR_CREDENTIALS_LENGTH',
      `RFC 1929 needs a username and a password of 1 to 255 bytes each, got ${user.length} and ${pass.length}`,
    );
  }
  return Buffer.concat([Buffer.from([AUTH_VERSION, user.length]), user, Buffer.from([pass.length]), pass]);
}

export function encodeAuthStatus(success: boolean): Buffer {
  return Buffer.from([AUTH_VERSION, success ? AuthStatus.SUCCESS : AuthStatus.FAILURE]);
}

/** The server's answer: true when STATUS is 0x00. */
export function parseAuthStatus(buf: Buffer): ParseResult<boolean> {
  if (buf.length < 2) return MORE;
  // Some servers answer with version 0x05 here; the status byte is what matters.
  if (buf[0] !== AUTH_VERSION && buf[0] !== 0x05) {
    return fail(new SocksError('ERR_AUTH_VERSION', `username/password reply version 0x${(buf[0] ?? 0).toString(16)} is not 0x01`));
  }
  return ok(buf[1] === AuthStatus.SUCCESS, 2);
}
