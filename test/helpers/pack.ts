// Packing the working tree as a user gets it from the registry: the server's tarball and the client
// package's, packed from a copy so the packs' builds leave this tree alone.
import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './ship.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * This environment without what npm passes to scripts (npm_config_local_prefix and the like): under
 * `npm test` those would point an inner npm at this tree instead of the copy or scratch project.
 */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^npm_/i.test(key) && key !== 'INIT_CWD') env[key] = value;
  return { ...env, ...extra };
}

/**
 * Packs a copy of the working tree (so the pack's builds leave this tree alone); returns the server's
 * tarball and the client package's, which the server depends on: a user installs both from the registry.
 */
export function packCopy(scratch: string, only?: 'client'): { server: string | null; client: string } {
  const copy = join(scratch, 'tree');
  mkdirSync(copy);
  const files = run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT })
    .split('\0')
    .filter((f) => f !== '' && existsSync(join(ROOT, f)));
  run('tar', ['-C', ROOT, '--null', '-T', '-', '-cf', join(scratch, 'tree.tar')], { input: files.join('\0') });
  run('tar', ['-C', copy, '-xf', join(scratch, 'tree.tar')]);
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
  const packed = (args: string[]): string => {
    const out = run('npm', ['pack', '--json', '--pack-destination', scratch, ...args], { cwd: copy, env: cleanEnv() });
    return join(scratch, (JSON.parse(out.slice(out.indexOf('['))) as Array<{ filename: string }>)[0]!.filename);
  };
  // The server's pack builds the client too (its prepare runs build:client): the client's pack need not
  // build it again. Packed alone, the client is built first.
  const server = only === 'client' ? null : packed([]);
  if (server === null) run('npm', ['run', 'build:client'], { cwd: copy, env: cleanEnv() });
  return { server, client: packed(['--workspace', 'socksgate-client', '--ignore-scripts']) };
}
