import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fuzz } from '../../fuzz/engine.js';
import { loadCorpus } from '../../fuzz/run.js';
import { TARGETS } from '../../fuzz/targets.js';

// A bounded coverage-guided run of every parser that reads untrusted bytes, from the seed corpus
// in fuzz/corpus/. `npm run fuzz -- --seconds 600 --save` runs longer and keeps what it finds.
// Bounded by a count of inputs, not by time: the same inputs run on a quiet or a loaded machine.
const INPUTS = Number(process.env.SOCKSGATE_FUZZ_INPUTS ?? 300);
// Only a safety net (the test runner's timeout comes first); the count decides when a run ends.
const SECONDS_CAP = 600;

for (const target of TARGETS) {
  test(`fuzz ${target.name}: no input breaks its properties`, (t) => {
    const corpus = loadCorpus(target.name);
    assert.ok(corpus.length > 0, `seed corpus fuzz/corpus/${target.name}/ is empty`);
    const result = fuzz(target, corpus, { seconds: SECONDS_CAP, maxExecutions: INPUTS, seed: 20261125 });
    t.diagnostic(`${result.executions} inputs, ${result.features} coverage features, corpus ${result.corpus.length} (+${result.added.length})`);
    assert.deepEqual(
      result.findings.map((f) => `${f.input.toString('hex').slice(0, 120)}: ${f.error.split('\n')[0]}`),
      [],
      'inputs that break the target (reproduce with npm run fuzz)',
    );
    // Every input of the fixed budget ran (the seeds count as inputs), and the run saw the parser's code.
    assert.equal(result.executions, INPUTS);
    assert.ok(result.features > 0, 'no coverage features: the code of the target was not measured');
  });
}
