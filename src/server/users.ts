import { createHmac, randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFile, rename, writeFile, open } from 'node:fs/promises';
import { ConfigError } from '../config/errors.js';

// Users file: one `name:$scrypt$ln=14,r=8,p=1$SALT$HASH` per line (base64 salt and hash);
// blank lines and lines starting with # are kept as they are.

const KEY_LENGTH = 32;
const DEFAULT_LOG_N = 14;

interface PasswordHash {
  readonly logN: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

function scrypt(password: Buffer, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password, salt, length, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

function scryptOptions(h: { logN: number; r: number; p: number }): ScryptOptions {
  return { N: 2 ** h.logN, r: h.r, p: h.p, maxmem: 256 * 2 ** h.logN * h.r + 1024 * 1024 };
}

export async function hashPassword(password: Buffer, logN = DEFAULT_LOG_N): Promise<string> {
  const salt = randomBytes(16);
  const params = { logN, r: 8, p: 1 };
  const hash = await scrypt(password, salt, KEY_LENGTH, scryptOptions(params));
  return `$scrypt$ln=${logN},r=8,p=1$${salt.toString('base64')}$${hash.toString('base64')}`;
}

const HASH_PATTERN = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/;

function parseHash(text: string): PasswordHash | null {
  const m = HASH_PATTERN.exec(text);
  if (!m) return null;
  const [logN, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (logN < 1 || logN > 20 || r < 1 || p < 1) return null;
  return { logN, r, p, salt: Buffer.from(m[4]!, 'base64'), hash: Buffer.from(m[5]!, 'base64') };
}

/** Why a name cannot be a user name, or null when it can. */
export function checkUsername(name: string): string | null {
  const bytes = Buffer.byteLength(name);
  if (bytes < 1 || bytes > 255) return `must be 1 to 255 bytes (RFC 1929), got ${bytes}`;
  if (/[:\s\p{Cc}]/u.test(name)) return 'must not contain ":", spaces or control characters';
  return null;
}

/** The users allowed to log in with RFC 1929 username/password, checked in constant time. */
export class UserStore {
  // A successful scrypt check is remembered as a keyed digest, so a returning client costs one HMAC
  // instead of a full scrypt; a wrong password always pays the full scrypt price.
  private readonly memoKey = randomBytes(32);
  private readonly memo = new Map<string, Buffer>();
  private readonly dummy: PasswordHash;

  private constructor(private readonly users: ReadonlyMap<string, PasswordHash>) {
    const first = users.values().next().value as PasswordHash | undefined;
    this.dummy = { logN: first?.logN ?? DEFAULT_LOG_N, r: first?.r ?? 8, p: first?.p ?? 1, salt: randomBytes(16), hash: randomBytes(KEY_LENGTH) };
  }

  static fromEntries(entries: Iterable<[string, string]>): UserStore {
    const users = new Map<string, PasswordHash>();
    for (const [name, text] of entries) {
      const hash = parseHash(text);
      if (!hash) throw new ConfigError('ERR_USERS_HASH', `user ${name}: password hash is not in $scrypt$ln=N,r=R,p=P$SALT$HASH form`);
      users.set(name, hash);
    }
    return new UserStore(users);
  }

  static async load(file: string): Promise<UserStore> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new ConfigError('ERR_USERS_FILE', `users file ${file}: cannot read it (${code}); create it with: echo PASSWORD | socksgate passwd --file ${file} USER`, { cause: error });
    }
    return UserStore.parse(text, file);
  }

  /** The users of a users file's text; throws ConfigError naming the line for anything malformed. */
  static parse(text: string, file: string): UserStore {
    const users = new Map<string, PasswordHash>();
    text.split('\n').forEach((raw, index) => {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) return;
      const where = `users file ${file} line ${index + 1}`;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      const nameProblem = checkUsername(name);
      if (colon < 0 || nameProblem) {
        throw new ConfigError('ERR_USERS_LINE', `${where}: expected NAME:$scrypt$..., ${nameProblem ? `the name ${nameProblem}` : 'found no ":"'}`);
      }
      const hash = parseHash(line.slice(colon + 1));
      if (!hash) {
        throw new ConfigError('ERR_USERS_HASH', `${where}: the password hash of ${name} is not in $scrypt$ln=N,r=R,p=P$SALT$HASH form; set it again with socksgate passwd`);
      }
      users.set(name, hash);
    });
    return new UserStore(users);
  }

  get size(): number {
    return this.users.size;
  }

  async verify(username: string, password: Buffer): Promise<boolean> {
    const record = this.users.get(username);
    const digest = createHmac('sha256', this.memoKey).update(username).update('\0').update(password).digest();
    const known = this.memo.get(username);
    if (record && known && timingSafeEqual(known, digest)) return true;
    // Unknown users are checked against a dummy hash so that timing does not tell names apart.
    const target = record ?? this.dummy;
    const key = await scrypt(password, target.salt, target.hash.length, scryptOptions(target));
    const match = key.length === target.hash.length && timingSafeEqual(key, target.hash) && record !== undefined;
    if (match) this.memo.set(username, digest);
    return match;
  }
}

/** Adds or updates `username` in `file` (created with mode 0600), keeping every other line. */
export async function setUserInFile(file: string, username: string, password: Buffer): Promise<'added' | 'updated'> {
  const problem = checkUsername(username);
  if (problem) throw new ConfigError('ERR_USERNAME', `user name ${JSON.stringify(username)} ${problem}`);
  if (password.length < 1 || password.length > 255) {
    throw new ConfigError('ERR_PASSWORD', `password must be 1 to 255 bytes (RFC 1929), got ${password.length}`);
  }
  let lines: string[] = [];
  try {
    lines = (await readFile(file, 'utf8')).split('\n');
    if (lines.at(-1) === '') lines.pop();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const entry = `${username}:${await hashPassword(password)}`;
  const index = lines.findIndex((line) => line.trim().startsWith(`${username}:`));
  if (index >= 0) lines[index] = entry;
  else lines.push(entry);
  const temp = `${file}.${process.pid}.tmp`;
  await writeFile(temp, `${lines.join('\n')}\n`, { mode: 0o600 });
  const handle = await open(temp, 'r');
  await handle.sync().finally(() => handle.close());
  await rename(temp, file);
  return index >= 0 ? 'updated' : 'added';
}
