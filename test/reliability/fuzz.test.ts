import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fuzz } from '../../fuzz/engine.js';
import { loadCorpus } from '../../fuzz/run.js';
import { TARGETS } from '../../fuzz/targets.js';

// A bounded coverage-guided run of every parser that reads untrusted bytes, from the seed corpus
// in fuzz/corpus/. `npm run fuzz -- --seconds 600 --save` runs longer and keeps what it finds.
const SECONDS = Number(process.env.SOCKSGATE_FUZZ_SECONDS ?? 5);

for (const target of TARGETS) {
  test(`fuzz ${target.name}: no input breaks its properties`, (t) => {
    const corpus = loadCorpus(target.name);
    assert.ok(corpus.length > 0, `seed corpus fuzz/corpus/${target.name}/ is empty`);
    const result = fuzz(target, corpus, { seconds: SECONDS, seed: 20261125 });
    t.diagnostic(`${result.executions} inputs, ${result.features} coverage features, corpus ${result.corpus.length} (+${result.added.length})`);
    assert.deepEqual(
      result.findings.map((f) => `${f.input.toString('hex').slice(0, 120)}: ${f.error.split('\n')[0]}`),
      [],
      'inputs that break the target (reproduce with npm run fuzz)',
    );
    // A floor that proves the run did real work even on a loaded machine (counts vary with speed).
    assert.ok(result.executions > 100, `only ${result.executions} inputs ran`);
  });
}
