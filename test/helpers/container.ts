// The container image of deploy/Dockerfile, built and run with Debian's podman: runc (crun refuses
// hybrid cgroup hierarchies), cgroupfs, explicit ulimits (the defaults exceed common hard limits) and
// host networking (so the tests reach it on loopback). Where the Dockerfile's base image cannot be
// pulled, test/deploy/stand-in-base.sh builds a stand-in under its name first; build-image.sh does both.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { requireProgram } from './servers.js';
import { run, startProgram, type RunningProgram } from './ship.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const IMAGE = 'localhost/socksgate:test';
export const PODMAN_GLOBAL = ['--runtime', 'runc', '--cgroup-manager=cgroupfs'];
const LIMITS = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=1000:1000'];

export function podman(args: string[], timeoutMs = 120_000): string {
  return run('podman', [...PODMAN_GLOBAL, ...args], { timeoutMs });
}

export function requirePodman(): void {
  requireProgram('podman', 'podman runc');
  requireProgram('runc', 'runc');
}

let built = false;

/** The stand-in base (if it is not there yet) and the image of deploy/Dockerfile, as `localhost/socksgate:test`. */
export function buildImage(): void {
  if (built) return;
  requirePodman();
  requireProgram('debootstrap', 'debootstrap');
  requireProgram('flock', 'util-linux');
  // Normally a cache check: npm's pretest step built it before the suite.
  run('bash', [`${ROOT}test/deploy/build-image.sh`], { timeoutMs: 900_000 });
  built = true;
}

export function imageSize(): number {
  return Number(podman(['image', 'inspect', '--format', '{{.Size}}', IMAGE]).trim());
}

let containers = 0;

export interface RunningContainer extends RunningProgram {
  readonly name: string;
  /** Runs a command inside it; its standard output. */
  exec(args: string[]): string;
  signal(signal: string): void;
  remove(): void;
}

/** `podman run` of the image in the foreground: its log lines are read as they come. */
export function runContainer(runArgs: string[], imageArgs: string[]): RunningContainer {
  const name = `socksgate-test-${process.pid}-${++containers}`;
  const program = startProgram('podman', [...PODMAN_GLOBAL, 'run', '--rm', '--name', name, '--network', 'host', '--no-healthcheck', ...LIMITS, ...runArgs, IMAGE, ...imageArgs]);
  return Object.assign(program, {
    name,
    exec: (args: string[]) => podman(['exec', name, ...args]),
    signal: (signal: string) => {
      podman(['kill', '--signal', signal, name]);
    },
    remove: () => {
      spawnSync('podman', [...PODMAN_GLOBAL, 'rm', '--force', '--time', '0', name], { stdio: 'ignore', timeout: 60_000 });
    },
  });
}
