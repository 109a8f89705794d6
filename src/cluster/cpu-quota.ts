// The CPU quota of this process's cgroup (a container's CPU limit), cgroup v1 and v2. Node's
// availableParallelism() counts the cores the process may run on, not the time it may use: a pod
// limited to 2 CPUs on a 32-core node sees 32.
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';

export interface CpuQuota {
  /** CPUs' worth of time per period (2.5 for a limit of 2500m). */
  readonly cpus: number;
  /** Which file said so, for the log: "cgroup v2 cpu.max 250000 100000". */
  readonly source: string;
}

interface Mount {
  readonly root: string;
  readonly point: string;
  readonly type: string;
  readonly options: string[];
}

function read(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** /proc/self/mountinfo: ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER-OPTIONS. */
function cgroupMounts(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const [head, tail] = line.split(' - ');
    if (!head || !tail) continue;
    const fields = head.split(' ');
    const [type, , superOptions] = tail.split(' ');
    if (type !== 'cgroup' && type !== 'cgroup2') continue;
    mounts.push({ root: fields[3] ?? '/', point: fields[4] ?? '', type, options: (superOptions ?? '').split(',') });
  }
  return mounts;
}

/**
 * The folders of the cgroup and its ancestors as mounted here, innermost first (the tightest limit
 * may be set on a parent, as a pod's is above its containers).
 */
function cgroupDirs(fsRoot: string, mount: Mount, path: string): string[] {
  // Inside a cgroup namespace the path is relative to the mount's root already.
  const relative = path === mount.root || path.startsWith(`${mount.root === '/' ? '' : mount.root}/`) ? posix.relative(mount.root, path) : '';
  const dirs: string[] = [];
  const parts = relative === '' ? [] : relative.split('/');
  for (let i = parts.length; i >= 0; i--) dirs.push(join(fsRoot, mount.point, ...parts.slice(0, i)));
  return dirs;
}

/** The smallest CPU quota over this process's cgroups, or null when none is set. `fsRoot` is for tests. */
export function cpuQuota(fsRoot = '/'): CpuQuota | null {
  const groups = read(join(fsRoot, 'proc/self/cgroup'));
  const mountinfo = read(join(fsRoot, 'proc/self/mountinfo'));
  if (groups === null || mountinfo === null) return null;
  const mounts = cgroupMounts(mountinfo);
  let best: CpuQuota | null = null;
  const consider = (cpus: number, source: string): void => {
    if (cpus > 0 && (best === null || cpus < best.cpus)) best = { cpus, source };
  };
  for (const line of groups.split('\n')) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!match) continue;
    const [, id, controllers, path] = match as unknown as [string, string, string, string];
    if (id === '0' && controllers === '') {
      const mount = mounts.find((m) => m.type === 'cgroup2');
      if (!mount) continue;
      for (const dir of cgroupDirs(fsRoot, mount, path)) {
        const [quota, period] = (read(join(dir, 'cpu.max')) ?? '').trim().split(/\s+/);
        if (quota && quota !== 'max' && Number(period) > 0) consider(Number(quota) / Number(period), `cgroup v2 cpu.max ${quota} ${period}`);
      }
    } else if (controllers.split(',').includes('cpu')) {
      const mount = mounts.find((m) => m.type === 'cgroup' && m.options.includes('cpu'));
      if (!mount) continue;
      for (const dir of cgroupDirs(fsRoot, mount, path)) {
        const quota = Number(read(join(dir, 'cpu.cfs_quota_us')));
        const period = Number(read(join(dir, 'cpu.cfs_period_us')));
        if (quota > 0 && period > 0) consider(quota / period, `cgroup v1 cpu.cfs_quota_us ${quota} / cpu.cfs_period_us ${period}`);
      }
    }
  }
  return best;
}
