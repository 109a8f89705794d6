import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { Namespace, Secret, ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { loadConfig } from '../../src/config/load.js';
import { requireProgram } from '../helpers/servers.js';

// What validates what (offline; no cluster here; image.test.ts, kubernetes.test.ts and systemd.test.ts run them):
// - Kubernetes: `kubectl kustomize` renders base and overlay; kubernetes-models validates every object
//   against the Kubernetes schemas; the test checks the properties UDP ASSOCIATE needs.
// - nginx stream recipe: `nginx -t`.
// - systemd unit: `systemd-analyze verify`.
// - Dockerfile: structure checks below (multi-stage, non-root, ports); image.test.ts builds and runs it.
// - The config shipped in the ConfigMap: socksgate's own validation.
const deploy = fileURLToPath(new URL('../../../deploy/', import.meta.url));

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace as never,
  'v1/Secret': Secret as never,
  'v1/ConfigMap': ConfigMap as never,
  'v1/Service': Service as never,
  'apps/v1/Deployment': Deployment as never,
};

function render(dir: string): Array<Record<string, any>> {
  requireProgram('kubectl', 'kubectl (it comes with the machine image)');
  const text = execFileSync('kubectl', ['kustomize', join(deploy, dir)], { encoding: 'utf8' });
  return parseAllDocuments(text).map((d) => d.toJSON() as Record<string, any>);
}

for (const dir of ['k8s/base', 'k8s/overlays/production']) {
  test(`${dir}: renders, validates against the Kubernetes schemas, and keeps a client's TCP and UDP together`, () => {
    const objects = render(dir);
    for (const object of objects) {
      // kustomize folds long base64 values over lines; the API server's decoder ignores the newlines.
      if (object.kind === 'Secret') for (const key of Object.keys(object.data ?? {})) object.data[key] = String(object.data[key]).replace(/\s+/g, '');
      const Model = MODELS[`${object.apiVersion}/${object.kind}`];
      assert.ok(Model, `a model for ${object.apiVersion} ${object.kind}`);
      new Model(object as never).validate();
    }
    const service = objects.find((o) => o.kind === 'Service')!;
    assert.equal(service.spec.sessionAffinity, 'ClientIP');
    assert.equal(service.spec.externalTrafficPolicy, 'Local');
    assert.deepEqual(
      service.spec.ports.map((p: { port: number; protocol: string }) => `${p.port}/${p.protocol}`),
      ['1080/TCP', '1080/UDP'],
    );
    const deployment = objects.find((o) => o.kind === 'Deployment')!;
    const container = deployment.spec.template.spec.containers[0];
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.ok(container.args.includes('--udp-advertise'), 'the advertise address is set');
    assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
    assert.equal(deployment.spec.template.spec.securityContext.runAsNonRoot, true);
    if (dir.includes('production')) {
      assert.equal(deployment.spec.replicas, 3);
      assert.ok(objects.every((o) => o.kind === 'Namespace' || o.metadata.namespace === 'socksgate'));
    }
  });
}

test('the config shipped in the ConfigMap is valid socksgate config', async () => {
  const config = await loadConfig({ file: join(deploy, 'k8s/base/socksgate.yaml') });
  assert.equal(config.udp.port, 1080);
  assert.deepEqual(config.listen, ['0.0.0.0:1080']);
});

test('nginx stream recipe passes nginx -t', () => {
  const nginx = requireProgram('nginx', 'nginx-light libnginx-mod-stream');
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-nginx-'));
  try {
    const run = spawnSync(nginx, ['-t', '-c', join(deploy, 'nginx/socksgate-stream.conf'), '-e', join(dir, 'error.log')], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /test is successful/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const text = readFileSync(join(deploy, 'nginx/socksgate-stream.conf'), 'utf8');
  // One upstream block serves TCP and UDP, so both hash on one ring and share failure state.
  assert.equal(text.match(/^\s*upstream /gm)?.length, 1, 'one upstream for TCP and UDP');
  assert.equal(text.match(/proxy_pass socksgate;/g)?.length, 2);
  assert.match(text, /hash \$remote_addr consistent;/);
  assert.doesNotMatch(text, /^\s*proxy_responses/m, 'replies may come at any time');
});

test('systemd unit passes systemd-analyze verify', () => {
  const analyze = requireProgram('systemd-analyze', 'systemd');
  const dir = mkdtempSync(join(tmpdir(), 'socksgate-unit-'));
  try {
    // The unit names /usr/bin/node; verify it with this machine's node in that place.
    const unit = readFileSync(join(deploy, 'systemd/socksgate.service'), 'utf8').replace('/usr/bin/node', process.execPath);
    writeFileSync(join(dir, 'socksgate.service'), unit);
    const run = spawnSync(analyze, ['verify', join(dir, 'socksgate.service')], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr.trim(), '', 'no warnings');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Dockerfile: multi-stage, runs as a non-root user, exposes TCP and UDP 1080', () => {
  const text = readFileSync(join(deploy, 'Dockerfile'), 'utf8');
  assert.equal(text.match(/^FROM /gm)?.length, 2);
  assert.match(text, /^USER node$/m);
  assert.match(text, /^EXPOSE 1080\/tcp 1080\/udp 9090\/tcp$/m);
  assert.match(text, /npm prune --omit=dev/);
});
