import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzz, inputName } from './engine.js';
import { TARGETS } from './targets.js';

/** The seed corpus kept in the repository: fuzz/corpus/<target>/*. */
export const CORPUS = fileURLToPath(new URL('../../fuzz/corpus/', import.meta.url));

export function loadCorpus(target: string): Buffer[] {
  try {
    const dir = join(CORPUS, target);
    return readdirSync(dir)
      .sort()
      .map((name) => readFileSync(join(dir, name)));
  } catch {
    return [];
  }
}

// npm run fuzz -- [--seconds N] [--save] [target …]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const seconds = Number(args[args.indexOf('--seconds') + 1] ?? 60) || 60;
  const save = args.includes('--save');
  const names = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--seconds');
  const targets = names.length ? TARGETS.filter((t) => names.includes(t.name)) : TARGETS;
  let failed = false;
  for (const target of targets) {
    const result = fuzz(target, loadCorpus(target.name), { seconds });
    process.stdout.write(`${target.name}: ${result.executions} inputs, ${result.features} coverage features, corpus ${result.corpus.length} (+${result.added.length}), findings ${result.findings.length}\n`);
    if (save) {
      mkdirSync(join(CORPUS, target.name), { recursive: true });
      for (const input of result.added) writeFileSync(join(CORPUS, target.name, inputName(input)), input);
    }
    for (const finding of result.findings) {
      failed = true;
      const dir = fileURLToPath(new URL('../../fuzz/findings/', import.meta.url));
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${target.name}-${inputName(finding.input)}`);
      writeFileSync(file, finding.input);
      process.stdout.write(`  FINDING saved to ${file}\n  ${finding.error.split('\n').slice(0, 4).join('\n  ')}\n`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}
