import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { localSample, localStatus } from '../observe/admin.js';
import { createMetrics } from '../observe/metrics.js';
import type { SocksServer } from '../server/server.js';
import { isToWorker, sendToPrimary, type WorkerStatus } from './messages.js';
import type { WorkerSteering } from './steering.js';
import { cpuQuota } from './cpu-quota.js';

/**
 * How many worker processes `workers` asks for, and why; 1 means no workers at all. 0: one per CPU
 * the process may use, that is the cgroup's CPU quota when one is set (a container's CPU limit,
 * rounded down, at least 1), else one per core.
 */
export function workerCount(configured: number, fsRoot = '/'): { count: number; why: string } {
  if (configured !== 0) return { count: configured, why: `workers: ${configured} in the configuration` };
  const cores = availableParallelism();
  const quota = cpuQuota(fsRoot);
  if (quota === null || quota.cpus >= cores) return { count: cores, why: `workers: 0, one per core: ${cores} cores${quota ? ` (the CPU quota, ${quota.cpus}, is no lower)` : ', no CPU quota'}` };
  const count = Math.max(1, Math.floor(quota.cpus));
  return { count, why: `workers: 0, one per CPU of the quota: ${quota.cpus} CPU${quota.cpus === 1 ? '' : 's'} (${quota.source}) of ${cores} cores` };
}

/** In a worker process: its slot (1…N) and the number of workers, as the primary set them. */
export function workerIdentity(): { slot: number; of: number } | null {
  if (!cluster.isWorker) return null;
  return { slot: Number(process.env.SOCKSGATE_WORKER ?? cluster.worker?.id ?? 0), of: Number(process.env.SOCKSGATE_WORKERS ?? 1) };
}

/**
 * A worker's side of the IPC channel: answers the primary's status and reload requests, feeds
 * fixed-port claims to the steering, serves its metrics for aggregation, and drains when told to
 * or when the primary is gone (a worker never outlives its primary).
 */
export function linkWorker(
  server: SocksServer,
  steering: WorkerSteering | null,
  log: Logger,
  actions: { reload: () => Promise<string[]>; drain: (deadlineMs: number) => Promise<void>; shutdownMs: number },
): void {
  // The primary asks for these (as JSON, to aggregate) when its /metrics is scraped.
  const registry = createMetrics(server);
  if (steering) steering.serve(server.udpStats, (datagram, ip, port) => server.deliverSteered(datagram, ip, port));
  let draining = false;
  const drain = (deadlineMs: number): void => {
    if (draining) return;
    draining = true;
    steering?.close();
    actions.drain(deadlineMs).then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, `shutdown failed: ${(error as Error)?.message ?? String(error)}`);
        process.exit(1);
      },
    );
  };
  process.on('message', (message: unknown) => {
    if (!isToWorker(message)) return;
    switch (message.sg) {
      case 'request': {
        const { seq } = message;
        if (message.what === 'status') sendToPrimary({ sg: 'reply', seq, ok: true, data: { status: localStatus(server), claims: steering?.claims ?? null } satisfies WorkerStatus });
        else if (message.what === 'sample') sendToPrimary({ sg: 'reply', seq, ok: true, data: localSample(server) });
        else if (message.what === 'metrics')
          registry.getMetricsAsJSON().then(
            (data) => sendToPrimary({ sg: 'reply', seq, ok: true, data }),
            (error: Error) => sendToPrimary({ sg: 'reply', seq, ok: false, error: error.message }),
          );
        else
          actions.reload().then(
            (needsRestart) => sendToPrimary({ sg: 'reply', seq, ok: true, data: needsRestart }),
            (error: Error) => sendToPrimary({ sg: 'reply', seq, ok: false, error: error.message }),
          );
        break;
      }
      case 'drain':
        // Listeners close at once (the first step of a drain); the ack tells the primary no new client gets in.
        drain(message.deadlineMs);
        sendToPrimary({ sg: 'ack', seq: message.seq });
        break;
      default:
        steering?.handle(message);
    }
  });
  process.on('disconnect', () => {
    log.warn('the primary process is gone: draining');
    drain(0);
  });
  // The primary coordinates shutdown: a terminal's Ctrl-C reaches every process of the group.
  process.on('SIGINT', () => {});
  // A worker ended on its own drains like the whole server would; the primary then starts a new one.
  process.on('SIGTERM', () => drain(actions.shutdownMs));
}
