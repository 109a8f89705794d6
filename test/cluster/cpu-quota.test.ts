// `workers: 0` and the cgroup CPU quota, on file trees laid out as the kernel shows them in a
// container (cgroup v2, v1, and hybrid) under a root the test makes. The image test runs the same
// code in a real container with a CPU limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { cpuQuota } from '../../src/cluster/cpu-quota.js';
import { workerCount } from '../../src/cluster/worker.js';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'socksgate-cgroup-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const V2_MOUNT = '1268 1262 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n';
const V1_MOUNTS =
  '700 690 0:30 /kubepods/pod1/c1 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n' +
  '701 690 0:31 /kubepods/pod1/c1 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n' +
  '702 690 0:32 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n';

test('cgroup v2: cpu.max of the container, and the tighter of a parent', (t) => {
  const root = tree({
    'proc/self/cgroup': '0::/\n',
    'proc/self/mountinfo': V2_MOUNT,
    'sys/fs/cgroup/cpu.max': '250000 100000\n',
  });
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.deepEqual(cpuQuota(root), { cpus: 2.5, source: 'cgroup v2 cpu.max 250000 100000' });

  const nested = tree({
    'proc/self/cgroup': '0::/pod/app\n',
    'proc/self/mountinfo': V2_MOUNT,
    'sys/fs/cgroup/pod/app/cpu.max': 'max 100000\n',
    'sys/fs/cgroup/pod/cpu.max': '150000 100000\n',
  });
  t.after(() => rmSync(nested, { recursive: true, force: true }));
  assert.deepEqual(cpuQuota(nested), { cpus: 1.5, source: 'cgroup v2 cpu.max 150000 100000' });
});

test('cgroup v2 without a limit: no quota', (t) => {
  const root = tree({ 'proc/self/cgroup': '0::/\n', 'proc/self/mountinfo': V2_MOUNT, 'sys/fs/cgroup/cpu.max': 'max 100000\n' });
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.equal(cpuQuota(root), null);
});

test('cgroup v1 (hybrid): cpu.cfs_quota_us over cpu.cfs_period_us, the mount root being the container\'s cgroup', (t) => {
  const root = tree({
    'proc/self/cgroup': '12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n',
    'proc/self/mountinfo': V1_MOUNTS,
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '100000\n',
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
  });
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.deepEqual(cpuQuota(root), { cpus: 1, source: 'cgroup v1 cpu.cfs_quota_us 100000 / cpu.cfs_period_us 100000' });

  const unlimited = tree({
    'proc/self/cgroup': '4:cpu,cpuacct:/kubepods/pod1/c1\n',
    'proc/self/mountinfo': V1_MOUNTS,
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '-1\n',
    'sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
  });
  t.after(() => rmSync(unlimited, { recursive: true, force: true }));
  assert.equal(cpuQuota(unlimited), null);
});

test('workers: 0 takes the quota rounded down (at least 1) when it is below the cores, and says why', (t) => {
  const cores = availableParallelism();
  const half = tree({ 'proc/self/cgroup': '0::/\n', 'proc/self/mountinfo': V2_MOUNT, 'sys/fs/cgroup/cpu.max': '50000 100000\n' });
  const none = tree({ 'proc/self/cgroup': '0::/\n', 'proc/self/mountinfo': V2_MOUNT, 'sys/fs/cgroup/cpu.max': 'max 100000\n' });
  t.after(() => {
    rmSync(half, { recursive: true, force: true });
    rmSync(none, { recursive: true, force: true });
  });
  assert.deepEqual(workerCount(0, half), { count: 1, why: `workers: 0, one per CPU of the quota: 0.5 CPUs (cgroup v2 cpu.max 50000 100000) of ${cores} cores` });
  assert.deepEqual(workerCount(0, none), { count: cores, why: `workers: 0, one per core: ${cores} cores, no CPU quota` });
  assert.deepEqual(workerCount(3, half), { count: 3, why: 'workers: 3 in the configuration' });
});
