// deploy/k8s/overlays/fleet-redis as a cluster would get it: `kubectl kustomize` renders it,
// kubernetes-models validates its objects, the socksgate config it ships names the Redis Service,
// and Redis run with the Deployment's own arguments (Debian's redis-server standing in for the
// redis:7 image, its data directory a scratch one for the volume) keeps the traffic-quota usage
// that socksgate, run with that config, wrote, across a restart of Redis and of socksgate.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { listenPorts, startCli, type RunningCli } from '../helpers/cli.js';
import { ROOT } from '../helpers/container.js';
import { Peer } from '../helpers/peer.js';
import { redisCommand } from '../helpers/redis.js';
import { freeTcpUdpPort, requireProgram, startEcho } from '../helpers/servers.js';
import { run } from '../helpers/ship.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type K8sObject = Record<string, any>;

/** redis-server with the recipe's arguments, on a loopback port and a scratch directory; stopped by its PID. */
async function startRedis(args: string[], port: number): Promise<{ stop: () => Promise<void> }> {
  const child: ChildProcess = spawn(requireProgram('redis-server', 'redis-server'), [...args, '--port', String(port), '--bind', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  // Ready once it answers PING (bounded: 200 tries, 25 ms apart).
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server ${args.join(' ')} exited with ${child.exitCode}: ${output}`);
    if ((await redisCommand(port, 'PING').catch(() => '')).startsWith('+PONG')) break;
    if (i === 200) throw new Error(`redis-server did not answer: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return {
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    },
  };
}

/** The quota hashes in Redis: key → "field value ..." (HGETALL in the inline protocol's reply). */
async function quotaHashes(port: number): Promise<Map<string, string>> {
  const keys = (await redisCommand(port, 'KEYS socksgate:quota:*')).split('\r\n').filter((l) => l.startsWith('socksgate:'));
  const out = new Map<string, string>();
  for (const key of keys) out.set(key, (await redisCommand(port, `HGETALL ${key}`)).split('\r\n').filter((l) => l !== '' && !/^[*$]/.test(l)).join(' '));
  return out;
}

test('the fleet-redis overlay: valid objects, a config that names the Service, quota usage kept across restarts', { timeout: 300_000 }, async (t) => {
  requireProgram('kubectl', 'kubectl (it comes with the machine image)');
  const objects = parseAllDocuments(run('kubectl', ['kustomize', join(ROOT, 'deploy/k8s/overlays/fleet-redis')])).map((d) => d.toJSON() as K8sObject);
  const find = (kind: string, name: string): K8sObject => {
    const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
    assert.ok(found, `the overlay has the ${kind} ${name}`);
    return found;
  };
  const redisDeployment = find('Deployment', 'socksgate-redis');
  new Deployment(redisDeployment as never).validate();
  new Deployment(find('Deployment', 'socksgate') as never).validate();
  const service = find('Service', 'socksgate-redis');
  new Service(service as never).validate();
  const claim = find('PersistentVolumeClaim', 'socksgate-redis-data');
  new PersistentVolumeClaim(claim as never).validate();

  // socksgate's config (the ConfigMap the pods mount) reaches Redis by the Service's name and port.
  const configMap = objects.find((o) => o.kind === 'ConfigMap' && String(o.metadata.name).startsWith('socksgate-config'));
  assert.ok(configMap, 'the overlay has the socksgate-config ConfigMap');
  const config = parse(configMap.data['socksgate.yaml'] as string) as K8sObject;
  const store = new URL(config.limits.store as string);
  assert.equal(store.hostname, `${service.metadata.name}`);
  assert.equal(Number(store.port), service.spec.ports[0].port);

  // Redis keeps its data on the claim's volume, appended to disk.
  const pod = redisDeployment.spec.template.spec;
  const container = pod.containers[0];
  const args = container.args as string[];
  const dataDir = args[args.indexOf('--dir') + 1];
  const mount = container.volumeMounts.find((m: K8sObject) => m.mountPath === dataDir);
  assert.ok(mount, `Redis' --dir ${dataDir} is a mounted volume`);
  assert.equal(pod.volumes.find((v: K8sObject) => v.name === mount.name)?.persistentVolumeClaim?.claimName, claim.metadata.name);
  assert.equal(redisDeployment.spec.strategy?.type, 'Recreate', 'a ReadWriteOnce volume: the old pod lets go before the new one starts');

  const scratch = mkdtempSync(join(tmpdir(), 'socksgate-fleet-redis-'));
  t.after(() => rmSync(scratch, { recursive: true, force: true }));
  const redisArgs = args.map((a, i) => (i > 0 && args[i - 1] === '--dir' ? scratch : a));
  const redisPort = await freeTcpUdpPort();
  let redis = await startRedis(redisArgs, redisPort);
  const echo = await startEcho();
  const users = join(scratch, 'users.txt');
  const passwd = startCli(['passwd', '--file', users, 'ann'], 'secret\n');
  assert.equal(await passwd.exited(), 0, passwd.stderr);
  // The shipped config, with what a test on loopback must change: addresses, the users file, Redis' port, and a quota.
  delete config.udp;
  const configFile = join(scratch, 'socksgate.yaml');
  const adminPort = await freeTcpUdpPort();
  writeFileSync(configFile, stringify({
    ...config,
    listen: ['127.0.0.1:0'],
    admin: `127.0.0.1:${adminPort}`,
    adminAllowRemote: false,
    users,
    allowLoopbackTargets: true,
    limits: { ...config.limits, store: `redis://127.0.0.1:${redisPort}/0` },
    quotas: { total: '64MiB' },
  }));
  const serve = async (): Promise<{ cli: RunningCli; port: number }> => {
    const cli = startCli(['serve', '--config', configFile]);
    const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 60_000);
    return { cli, port: listenPorts(line).get('127.0.0.1')! };
  };
  const usage = async (): Promise<{ up: number; down: number }> => {
    const report = (await (await fetch(`http://127.0.0.1:${adminPort}/users/usage`)).json()) as { users: Array<{ user: string; up: number; down: number }> };
    const ann = report.users.find((u) => u.user === 'ann');
    return { up: ann?.up ?? 0, down: ann?.down ?? 0 };
  };
  let socks: { cli: RunningCli; port: number } | null = null;
  try {
    socks = await serve();
    // 200 KiB echoed through one CONNECT: 200 KiB up and down.
    const peer = await Peer.connect(socks.port);
    await handshake(peer, { user: 'ann', pass: 'secret' });
    peer.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(peer)).code, 0);
    const payload = Buffer.alloc(200 * 1024, 0x63);
    peer.write(payload);
    assert.equal((await peer.read(payload.length, 30_000)).length, payload.length);
    peer.destroy();
    assert.equal(await socks.cli.stop(), 0, socks.cli.output());
    socks = null;
    const written = await quotaHashes(redisPort);
    assert.equal(written.size, 1, `one quota hash: ${[...written.keys()].join(', ')}`);
    const fields = [...written.values()][0]!.split(' ');
    const hash = Object.fromEntries(fields.flatMap((f, i) => (i % 2 === 0 ? [[f, Number(fields[i + 1])]] : [])));
    assert.deepEqual(hash, { up: payload.length, down: payload.length }, 'the bytes relayed, written to Redis when socksgate stopped');

    // Redis restarted with the same arguments (a new pod on the same volume): the usage is still there.
    await redis.stop();
    redis = await startRedis(redisArgs, redisPort);
    assert.deepEqual(await quotaHashes(redisPort), written);
    socks = await serve();
    assert.deepEqual(await usage(), { up: payload.length, down: payload.length });
  } finally {
    if (socks) await socks.cli.stop();
    await redis.stop();
    await echo.close();
  }
});
