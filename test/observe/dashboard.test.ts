import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { createMetrics } from '../../src/observe/metrics.js';
import { SocksServer } from '../../src/server/server.js';

test('every metric the Grafana dashboard queries is one the server exports', async () => {
  const dashboard = JSON.parse(readFileSync(new URL('../../../deploy/grafana/socksgate.json', import.meta.url), 'utf8')) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  };
  const server = new SocksServer({ listen: [] });
  const exposition = await createMetrics(server).metrics();
  const exported = new Set([...exposition.matchAll(/^# TYPE (\S+) (\w+)$/gm)].flatMap((m) => (m[2] === 'histogram' ? [`${m[1]}_bucket`, `${m[1]}_count`, `${m[1]}_sum`] : [m[1]!])));
  const queried = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\b(socksgate_[a-z_]+)/g)].map((m) => m[1]!))));
  assert.ok(queried.size >= 15, `the dashboard queries ${queried.size} metrics`);
  for (const name of queried) assert.ok(exported.has(name), `${name} (in the dashboard) is exported`);
  assert.equal(dashboard.panels.length, 12);
});
