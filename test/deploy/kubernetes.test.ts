// The Kubernetes manifests as a cluster would run them, without a cluster: `kubectl kustomize`
// renders the overlay, kubernetes-models validates it, deploy/k8s/README.md's commands make the
// users Secret (kubectl with --dry-run=client), and the rendered container runs in the image of
// deploy/Dockerfile with what the pod spec gives it: arguments (with $(VAR) expanded), environment,
// the ConfigMap and Secret as read-only mounts, user and group, read-only root, no capabilities,
// no privilege escalation, the CPU and memory limits; then its probes are asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { parseAllDocuments } from 'yaml';
import { Secret } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { CLI } from '../helpers/cli.js';
import { buildImage, ROOT, runContainer } from '../helpers/container.js';
import { requireProgram } from '../helpers/servers.js';
import { connectRoundTrip, getJson, run, udpRoundTrip } from '../helpers/ship.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type K8sObject = Record<string, any>;

function render(dir: string): K8sObject[] {
  requireProgram('kubectl', 'kubectl (it comes with the machine image)');
  return parseAllDocuments(run('kubectl', ['kustomize', join(ROOT, dir)])).map((d) => d.toJSON() as K8sObject);
}

/** The shell commands of the README's sh block. */
function readmeCommands(): string[] {
  const text = readFileSync(join(ROOT, 'deploy/k8s/README.md'), 'utf8');
  const block = /```sh\n([\s\S]*?)```/.exec(text);
  assert.ok(block, 'deploy/k8s/README.md has its commands in a sh block');
  return block[1]!.split('\n').filter((l) => l.trim() !== '');
}

/** Kubernetes' $(VAR) expansion of container args from the container's env. */
function expand(arg: string, env: Map<string, string>): string {
  return arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env.get(name) ?? whole);
}

/** "512Mi" → bytes; "2" or "500m" → CPUs. */
const bytes = (q: string): number => Number(/^(\d+)Mi$/.exec(q)![1]) * 1024 * 1024;
const cpus = (q: string): number => (q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q));

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)));
  });
}

test('the production overlay\'s pod runs in the image as its spec says', { timeout: 1_800_000 }, async (t) => {
  const scratch = mkdtempSync(join(tmpdir(), 'socksgate-k8s-'));
  t.after(() => rmSync(scratch, { recursive: true, force: true }));
  const objects = render('deploy/k8s/overlays/production');
  const deployment = objects.find((o) => o.kind === 'Deployment')!;
  new Deployment(deployment as never).validate();
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const configMap = objects.find((o) => o.kind === 'ConfigMap')!;
  assert.equal(objects.filter((o) => o.kind === 'Secret').length, 0, 'the users are not rendered: the README makes the Secret');

  // The README's commands: the users file by socksgate passwd, the Secret from it (offline).
  const commands = readmeCommands();
  const passwd = /^echo '([^']+)' \| npx socksgate passwd --file (\S+) (\S+)$/.exec(commands[0]!);
  assert.ok(passwd, `first command makes the users file: ${commands[0]}`);
  const [, password, usersFile, user] = passwd as unknown as [string, string, string, string];
  run(process.execPath, [CLI, 'passwd', '--file', usersFile, user], { cwd: scratch, input: `${password}\n` });
  const createSecret = commands.find((c) => c.startsWith('kubectl create secret generic socksgate-users '));
  assert.ok(createSecret, 'the README creates the socksgate-users Secret');
  const secret = parseAllDocuments(run('kubectl', [...createSecret.split(' ').slice(1), '--dry-run=client', '-o', 'yaml'], { cwd: scratch }))[0]!.toJSON() as K8sObject;
  new Secret(secret as never).validate();
  const usersVolume = pod.volumes.find((v: K8sObject) => v.secret);
  assert.equal(secret.metadata.name, usersVolume.secret.secretName, 'the Secret is the one the pod mounts');
  assert.equal(secret.metadata.namespace, deployment.metadata.namespace, 'in the Deployment\'s namespace');
  assert.equal(Buffer.from(secret.data[usersFile], 'base64').toString(), readFileSync(join(scratch, usersFile), 'utf8'));

  // The limits the workers must fit.
  const limits = container.resources.limits;
  assert.ok(limits.cpu && limits.memory, 'a CPU and a memory limit');
  const config = configMap.data['socksgate.yaml'] as string;
  const workers = Number(/^workers: (\d+)$/m.exec(config)?.[1]);
  assert.ok(workers >= 1 && workers <= cpus(limits.cpu), `workers (${workers}) at most the CPU limit (${limits.cpu})`);

  // Volumes as the kubelet lays them out: the ConfigMap key through subPath, the Secret as a folder.
  const mounts: string[] = [];
  for (const mount of container.volumeMounts as K8sObject[]) {
    const volume = pod.volumes.find((v: K8sObject) => v.name === mount.name);
    const source = join(scratch, 'volumes', mount.name);
    mkdirSync(source, { recursive: true });
    if (volume.configMap) {
      assert.equal(volume.configMap.name, configMap.metadata.name);
      for (const [key, value] of Object.entries(configMap.data as Record<string, string>)) writeFileSync(join(source, key), value);
    } else {
      for (const [key, value] of Object.entries(secret.data as Record<string, string>)) writeFileSync(join(source, key), Buffer.from(value, 'base64'), { mode: 0o644 });
    }
    mounts.push('--volume', `${mount.subPath ? join(source, mount.subPath) : source}:${mount.mountPath}:${mount.readOnly ? 'ro' : 'rw'}`);
  }

  // The advertise address is the Service's external address; here that is loopback, where the test is.
  const env = new Map<string, string>((container.env as K8sObject[]).map((e) => [e.name, e.value]));
  assert.ok(env.has('ADVERTISE_ADDRESS'));
  env.set('ADVERTISE_ADDRESS', '127.0.0.1');
  const security = { ...pod.securityContext, ...container.securityContext };
  const port = (name: string): number => container.ports.find((p: K8sObject) => p.name === name).containerPort;
  for (const p of [port('socks-tcp'), port('admin')]) assert.ok(await portFree(p), `port ${p} is free on this machine (the pod listens on it with host networking)`);

  buildImage();
  const runArgs = [
    ...[...env].flatMap(([k, v]) => ['--env', `${k}=${v}`]),
    ...mounts,
    '--user', `${security.runAsUser}:${security.runAsGroup}`,
    ...(security.readOnlyRootFilesystem ? ['--read-only'] : []),
    ...(security.capabilities?.drop?.includes('ALL') ? ['--cap-drop', 'ALL'] : []),
    ...(security.allowPrivilegeEscalation === false ? ['--security-opt', 'no-new-privileges'] : []),
    '--cpus', String(cpus(limits.cpu)),
    '--memory', String(bytes(limits.memory)),
  ];
  // The test's echo targets are on this machine's loopback, which the shipped config rightly denies.
  const args = [...(container.args as string[]).map((a) => expand(a, env)), '--allow-loopback-targets'];
  const running = runContainer(runArgs, args);
  try {
    const listening = await running.waitForLine((l) => Array.isArray(l.listen), 60_000);
    assert.equal(listening.workers, workers, 'the configured workers started');
    assert.match(String(listening.udpIo), /^native \(/);
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      const answer = await getJson(port(probe.httpGet.port), probe.httpGet.path);
      assert.equal(answer.status, 200, `${probe.httpGet.path} answers 200`);
    }
    const status = /^Uid:\s+(\d+)[\s\S]*^Gid:\s+(\d+)/m.exec(running.exec(['cat', '/proc/1/status']));
    assert.deepEqual([Number(status?.[1]), Number(status?.[2])], [security.runAsUser, security.runAsGroup]);
    const credentials = { user, pass: password };
    await connectRoundTrip(port('socks-tcp'), credentials);
    await udpRoundTrip(port('socks-tcp'), credentials);
    const used = Number(running.exec(['cat', '/sys/fs/cgroup/memory/memory.usage_in_bytes']).trim());
    t.diagnostic(`memory of the pod's container with ${workers} workers after the round trips: ${(used / 1048576).toFixed(0)} MiB of ${limits.memory}`);
    assert.ok(used > 0 && used < bytes(limits.memory) / 2, `well within the memory limit: ${used} bytes`);
    running.signal('TERM');
    assert.equal(await running.exited(60_000), 0, 'SIGTERM ends the pod\'s container with status 0');
  } finally {
    running.remove();
  }
});

test('workers: 0 in a container with a CPU limit follows the limit and says why', { timeout: 1_800_000 }, async () => {
  assert.ok(availableParallelism() > 1, 'this check needs a machine with more than one core (a limit of 1 CPU must be below the cores)');
  buildImage();
  const running = runContainer(['--cpus', '1'], ['serve', '--listen', '127.0.0.1:0', '--workers', '0', '--log-format', 'json']);
  try {
    const chose = await running.waitForLine((l) => typeof l.why === 'string', 60_000);
    assert.equal(chose.workers, 1);
    assert.match(String(chose.why), /^workers: 0, one per CPU of the quota: 1 CPU \(cgroup v[12] cpu\.(max 100000 100000|cfs_quota_us 100000 \/ cpu\.cfs_period_us 100000)\) of \d+ cores$/);
    const listening = await running.waitForLine((l) => Array.isArray(l.listen), 60_000);
    assert.equal(listening.workers, 1);
    running.signal('TERM');
    assert.equal(await running.exited(60_000), 0);
  } finally {
    running.remove();
  }
});
