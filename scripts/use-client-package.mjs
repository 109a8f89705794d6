// Points imports of the codec and the client at the socksgate-client package (packages/client):
// a relative import that names src/protocol/… becomes 'socksgate-client/protocol', src/client/control.js
// 'socksgate-client/control', any other src/client/… 'socksgate-client'. Rewrites src/, test/, fuzz/ and
// bench/ in place; run it again after merging a branch that still imports them relatively.
//   node scripts/use-client-package.mjs
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SPECIFIER = /((?:\bfrom|\bimport)\s*\(?\s*)'(\.{1,2}\/[^']+)'/g;

function target(file, specifier) {
  const path = relative(root, resolve(dirname(file), specifier)).split('\\').join('/');
  if (path.startsWith('src/protocol/')) return 'socksgate-client/protocol';
  if (path === 'src/client/control.js') return 'socksgate-client/control';
  if (path.startsWith('src/client/')) return 'socksgate-client';
  return null;
}

let changed = 0;
for (const folder of ['src', 'test', 'fuzz', 'bench']) {
  for (const name of readdirSync(join(root, folder), { recursive: true, encoding: 'utf8' })) {
    if (!name.endsWith('.ts')) continue;
    const file = join(root, folder, name);
    const text = readFileSync(file, 'utf8');
    const next = text.replace(SPECIFIER, (whole, head, specifier) => {
      const to = target(file, specifier);
      return to === null ? whole : `${head}'${to}'`;
    });
    if (next !== text) {
      writeFileSync(file, next);
      changed++;
      process.stdout.write(`${folder}/${name}\n`);
    }
  }
}
process.stdout.write(`${changed} files rewritten\n`);
