import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { SESSION_DURATION_BUCKETS, SessionDurations } from '../../src/observe/session-durations.js';

// The reference: prom-client's own histogram, observed at every session end.
function reference(): { registry: Registry; observe: (command: string, seconds: number) => void } {
  const registry = new Registry();
  const histogram = new Histogram({
    name: 'socksgate_session_duration_seconds',
    help: 'How long sessions lasted, by command.',
    labelNames: ['command'],
    buckets: [...SESSION_DURATION_BUCKETS],
    registers: [registry],
  });
  return { registry, observe: (command, seconds) => histogram.observe({ command }, seconds) };
}

const seconds = fc.oneof(
  fc.constantFrom(0, ...SESSION_DURATION_BUCKETS, 86400.5, 1e6),
  fc.double({ min: 0, max: 100000, noNaN: true }),
  fc.double({ min: 0, max: 0.2, noNaN: true }),
);
const ends = fc.array(fc.tuple(fc.constantFrom('connect', 'bind', 'udp', 'udp-over-tcp', '-'), seconds), { maxLength: 60 });

describe('session durations', () => {
  test('export exactly what prom-client observing each session end would, scrape after scrape', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(ends, { minLength: 1, maxLength: 3 }), async (batches) => {
        const mine = new Registry();
        const durations = new SessionDurations(mine);
        const theirs = reference();
        for (const batch of batches) {
          for (const [command, s] of batch) {
            durations.observe(command, s);
            theirs.observe(command, s);
          }
          assert.equal(await mine.metrics(), await theirs.registry.metrics());
          assert.deepEqual(await mine.getMetricsAsJSON(), await theirs.registry.getMetricsAsJSON());
        }
      }),
      { numRuns: 300 },
    );
  });

  test('a session counts in the first bucket whose bound is not below it, and in the sum and count', async () => {
    const registry = new Registry();
    const durations = new SessionDurations(registry);
    durations.observe('connect', 0.01);
    durations.observe('connect', 0.5);
    durations.observe('connect', 90000);
    durations.observe('-', 0.02);
    const text = await registry.metrics();
    for (const line of [
      'socksgate_session_duration_seconds_bucket{le="0.01",command="connect"} 1',
      'socksgate_session_duration_seconds_bucket{le="0.1",command="connect"} 1',
      'socksgate_session_duration_seconds_bucket{le="1",command="connect"} 2',
      'socksgate_session_duration_seconds_bucket{le="86400",command="connect"} 2',
      'socksgate_session_duration_seconds_bucket{le="+Inf",command="connect"} 3',
      'socksgate_session_duration_seconds_sum{command="connect"} 90000.51',
      'socksgate_session_duration_seconds_count{command="connect"} 3',
      'socksgate_session_duration_seconds_bucket{le="0.1",command="-"} 1',
      'socksgate_session_duration_seconds_count{command="-"} 1',
    ]) {
      assert.ok(text.includes(`${line}\n`), line);
    }
    // Commands not seen yet have no series, as with prom-client's own observe().
    assert.ok(!text.includes('command="bind"'));
  });
});
