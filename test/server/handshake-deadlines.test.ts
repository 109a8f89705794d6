import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HandshakeDeadlines, type HandshakeTimed } from '../../src/server/handshake-deadlines.js';

/** A session that records when its handshake ran out (performance.now()), and resolves `expired` then. */
class FakeSession implements HandshakeTimed {
  at: number[] = [];
  private settle!: () => void;
  readonly expired = new Promise<void>((resolve) => (this.settle = resolve));

  timedOut(kind: 'handshake'): void {
    assert.equal(kind, 'handshake');
    this.at.push(performance.now());
    this.settle();
  }
}

const later = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('each session times out once, no sooner than its own deadline; removed ones never', async () => {
  const deadlines = new HandshakeDeadlines(60);
  const [a, b, c, d] = [new FakeSession(), new FakeSession(), new FakeSession(), new FakeSession()];
  const t0 = performance.now();
  deadlines.add(a, t0);
  deadlines.add(b, t0);
  deadlines.add(d, t0);
  deadlines.remove(b);
  // Staggers the deadlines (not a synchronisation: each is checked against its own start).
  await later(25);
  const t1 = performance.now();
  deadlines.add(c, t1);
  // Added again: the new deadline replaces the first.
  deadlines.add(d, t1);
  await Promise.all([a.expired, c.expired, d.expired]);
  assert.equal(a.at.length, 1);
  assert.ok(a.at[0]! >= t0 + 60, `a after ${a.at[0]! - t0} ms`);
  assert.ok(c.at[0]! >= t1 + 60, `c after ${c.at[0]! - t1} ms`);
  assert.ok(d.at[0]! >= t1 + 60, `d after ${d.at[0]! - t1} ms`);
  assert.ok(c.at[0]! >= a.at[0]!);
  assert.deepEqual(b.at, []);
  assert.equal(deadlines.size, 0);
  assert.equal(c.at.length + d.at.length, 2);
});

test('a session added while the timer waits for an earlier one is still timed out', async () => {
  const deadlines = new HandshakeDeadlines(30);
  const first = new FakeSession();
  deadlines.add(first, performance.now());
  deadlines.remove(first);
  // The timer armed for `first` fires with nothing due, and waits again for the next.
  await later(10);
  const next = new FakeSession();
  const t = performance.now();
  deadlines.add(next, t);
  await next.expired;
  assert.ok(next.at[0]! >= t + 30);
  assert.deepEqual(first.at, []);
});

test('close drops every deadline and its timer: no session times out afterwards, no timer stays', async () => {
  const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const deadlines = new HandshakeDeadlines(20);
  const waiting = new FakeSession();
  deadlines.add(waiting, performance.now());
  deadlines.close();
  deadlines.close();
  assert.equal(deadlines.size, 0);
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length, before);
  await later(60);
  assert.deepEqual(waiting.at, []);
});
