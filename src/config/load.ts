import { readFile } from 'node:fs/promises';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from './errors.js';
import { isLoopbackHost, parseHostPort } from './endpoint.js';
import { OPTIONS } from './options.js';
import { configSchema, type Config } from './schema.js';

/** Values given on the command line, by dotted key ("dns.servers"). */
export type FlagValues = ReadonlyMap<string, unknown>;

export interface LoadOptions {
  /** YAML config file. */
  readonly file?: string | undefined;
  readonly flags?: FlagValues;
}

/**
 * Defaults, then the config file, then flags; validated as a whole. Throws ConfigError naming the
 * key (and where it came from), the bad value and what is expected.
 */
export async function loadConfig(options: LoadOptions = {}): Promise<Config> {
  const fromFile = options.file ? await readConfigFile(options.file) : {};
  const merged = structuredClone(fromFile) as Record<string, unknown>;
  for (const [key, value] of options.flags ?? []) setPath(merged, key.split('.'), value);
  return validateConfig(merged, { file: options.file, flags: options.flags });
}

export function validateConfig(input: unknown, origin: { file?: string | undefined; flags?: FlagValues | undefined } = {}): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => describeIssue(issue, input, origin));
    throw new ConfigError('ERR_CONFIG', `invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  checkSafety(result.data);
  return result.data;
}

async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError('ERR_CONFIG_FILE', `config file ${file}: cannot read it (${(error as NodeJS.ErrnoException).code})`, { cause: error });
  }
  return parseConfigText(text, file);
}

/** The mapping a YAML config text holds; throws ConfigError (naming `file`) for anything else. */
export function parseConfigText(text: string, file: string): Record<string, unknown> {
  let data: unknown;
  try {
    data = parseYaml(text, { logLevel: 'error' });
  } catch (error) {
    const detail = error instanceof YAMLParseError ? error.message : String(error);
    throw new ConfigError('ERR_CONFIG_YAML', `config file ${file}: not valid YAML: ${detail}`, { cause: error });
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError('ERR_CONFIG_YAML', `config file ${file}: expected a mapping of keys (listen:, users:, …), got ${Array.isArray(data) ? 'a list' : JSON.stringify(data)}`);
  }
  return data as Record<string, unknown>;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const part of path.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let node = input;
  for (const part of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

/** The keys of the object the schema expects at `path` (array indexes and wrappers stepped through). */
function schemaKeysAt(path: readonly PropertyKey[]): string[] {
  let node = configSchema as unknown as z.core.$ZodType;
  const unwrap = (): void => {
    // optional, default, nullable, pipe and the like wrap the schema that has the keys; bounded.
    for (let i = 0; i < 10; i++) {
      const def = node._zod.def as { innerType?: z.core.$ZodType; in?: z.core.$ZodType };
      const inner = def.innerType ?? def.in;
      if (!inner) return;
      node = inner;
    }
  };
  for (const part of path) {
    unwrap();
    const def = node._zod.def as { type: string; shape?: Record<string, z.core.$ZodType>; element?: z.core.$ZodType; valueType?: z.core.$ZodType };
    const next = typeof part === 'number' ? def.element : def.type === 'record' ? def.valueType : def.shape?.[String(part)];
    if (!next) return [];
    node = next;
  }
  unwrap();
  return Object.keys((node._zod.def as { shape?: Record<string, unknown> }).shape ?? {});
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown, origin: { file?: string | undefined; flags?: FlagValues | undefined }): string {
  const keyPath = issue.path.filter((p): p is string => typeof p === 'string');
  const key = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
  const option = OPTIONS.find((o) => o.key === keyPath.join('.'));
  const where = option && origin.flags?.has(option.key) ? `${key} (flag ${option.flag})` : origin.file ? `${key || '(top level)'} in ${origin.file}` : key || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    // Named by their place ("rules[0].destination") with the keys the schema has there.
    const place = (k: string): string => (key ? `${key}.${k}` : k);
    const known = schemaKeysAt(issue.path);
    return `${where}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${place(k)}"`).join(', ')}; known keys here: ${known.join(', ')}`;
  }
  const value = valueAt(input, issue.path);
  // A URL's password (an upstream's, say) never goes into a message.
  const got = value === undefined ? 'nothing' : JSON.stringify(value).replace(/(\/\/[^:@/"]*):[^@/"]*@/g, '$1:***@');
  const expected = issue.message.replace(/^Invalid (input|option): /, '');
  const hint = option ? ` (${option.description.replace(/\.$/, '')})` : '';
  return `${where}: got ${got}; ${expected}${hint}`;
}

/** Refuses an open proxy on a reachable address unless asked for explicitly. */
function checkSafety(config: Config): void {
  if (config.admin && !config.adminAllowRemote) {
    const admin = parseHostPort(config.admin);
    if (typeof admin !== 'string' && !isLoopbackHost(admin.host)) {
      throw new ConfigError(
        'ERR_ADMIN_REMOTE',
        `the admin listener ${config.admin} would be reachable from other hosts and has no authentication; use 127.0.0.1:PORT, or pass --admin-allow-remote behind a firewall`,
      );
    }
  }
  if (config.users || config.allowOpen) return;
  const exposed = config.listen.filter((text) => {
    const parsed = parseHostPort(text);
    return typeof parsed !== 'string' && !isLoopbackHost(parsed.host);
  });
  if (exposed.length > 0) {
    throw new ConfigError(
      'ERR_OPEN_PROXY',
      `listening on ${exposed.join(', ')} without users is an open proxy; add --users FILE (see socksgate passwd), listen on 127.0.0.1 only, or pass --allow-open if that is what you want`,
    );
  }
}
