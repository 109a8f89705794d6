import { z } from 'zod';
import { configSchema } from './schema.js';

export type OptionKind = 'boolean' | 'number' | 'string' | 'list' | 'enum' | 'duration' | 'yaml';

/** One configuration key as the command line and the README see it. */
export interface OptionInfo {
  /** Nested path: ['dns', 'servers']. */
  readonly path: readonly string[];
  /** Dotted config key: "dns.servers". */
  readonly key: string;
  /** Long flag: "--dns-servers". */
  readonly flag: string;
  readonly kind: OptionKind;
  /** Placeholder for the value in help texts. */
  readonly arg: string;
  readonly description: string;
  /** The default, or undefined when the key is unset by default. */
  readonly defaultValue: unknown;
  readonly choices?: readonly string[];
}

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function kindOf(schema: z.ZodType, meta: Record<string, unknown>): { kind: OptionKind; choices?: string[] } {
  if (meta.kind === 'duration') return { kind: 'duration' };
  let inner: z.ZodType = schema;
  while (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional || inner instanceof z.ZodPrefault) {
    inner = inner.unwrap() as z.ZodType;
  }
  if (inner instanceof z.ZodBoolean) return { kind: 'boolean' };
  if (inner instanceof z.ZodNumber) return { kind: 'number' };
  if (inner instanceof z.ZodArray) return { kind: inner.element instanceof z.ZodObject ? 'yaml' : 'list' };
  if (inner instanceof z.ZodRecord) return { kind: 'yaml' };
  if (inner instanceof z.ZodEnum) return { kind: 'enum', choices: inner.options.map(String) };
  return { kind: 'string' };
}

function objectShape(schema: z.ZodType): Record<string, z.ZodType> | null {
  let inner: z.ZodType = schema;
  while (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional || inner instanceof z.ZodPrefault) {
    inner = inner.unwrap() as z.ZodType;
  }
  return inner instanceof z.ZodObject ? (inner.shape as Record<string, z.ZodType>) : null;
}

function collect(shape: Record<string, z.ZodType>, prefix: string[], out: OptionInfo[]): void {
  for (const [name, schema] of Object.entries(shape)) {
    const path = [...prefix, name];
    const nested = objectShape(schema);
    if (nested) {
      collect(nested, path, out);
      continue;
    }
    const meta = (schema.meta() ?? {}) as Record<string, unknown>;
    const { kind, choices } = kindOf(schema, meta);
    const parsedDefault = schema.safeParse(undefined);
    out.push({
      path,
      key: path.join('.'),
      flag: `--${path.map(kebab).join('-')}`,
      kind,
      arg: typeof meta.arg === 'string' ? meta.arg : 'VALUE',
      description: schema.description ?? '',
      defaultValue: parsedDefault.success ? parsedDefault.data : undefined,
      ...(choices ? { choices } : {}),
    });
  }
}

/** Every configuration key, in schema order. */
export const OPTIONS: readonly OptionInfo[] = (() => {
  const out: OptionInfo[] = [];
  collect(configSchema.shape as Record<string, z.ZodType>, [], out);
  return out;
})();

/** A value as people write it: lists comma-separated, durations in seconds. */
export function formatValue(value: unknown, kind?: OptionKind): string {
  if (value === undefined) return '';
  if (kind === 'duration') return `${String(value)}s`;
  if (kind === 'yaml') return JSON.stringify(value);
  if (Array.isArray(value)) return value.length === 0 ? '[]' : value.join(', ');
  return String(value);
}
