import type { Worker } from 'node:cluster';
import type { ClaimCounts, StatusData } from '../observe/admin.js';
import type { ClaimKind, Dimension } from '../policy/store.js';
import type { QuotaDirection, QuotaLimits, UserUsage } from '../policy/quota-ledger.js';
import type { QuotaPeriod } from '../policy/quota-period.js';

/** A worker's answer to a status request: its server's figures and, in fixed-port mode, its claim table. */
export interface WorkerStatus {
  status: StatusData;
  claims: ClaimCounts | null;
}

/**
 * What the primary and its workers say to each other over the cluster IPC channel. Every message
 * carries `sg` (its kind), so prom-client's own cluster messages pass by untouched.
 */
export type ToPrimary =
  | { sg: 'listening'; addresses: Array<{ host: string; port: number }> }
  | { sg: 'steer-port'; port: number; host: string }
  | { sg: 'claim'; seq: number; ip: string; port: number | null }
  | { sg: 'release'; ip: string; port: number | null }
  | { sg: 'ack'; seq: number }
  | { sg: 'reply'; seq: number; ok: boolean; data?: unknown; error?: string }
  // Session claims of limits.store: local (src/cluster/limit-store.ts): a worker asks for places
  // (slots) when it has none left, and returns them when idle or recalled (`recall`: the recall answered).
  | { sg: 'limit-claim'; seq: number; kind: ClaimKind; key: string; limit: number }
  | { sg: 'limit-return'; kind: ClaimKind; key: string; slots: number; recall?: number }
  | { sg: 'limit-lease'; seq: number; kind: ClaimKind; key: string; dimension: Dimension; rate: number; burst: number; want: number }
  | { sg: 'limit-login-failed'; seq: number; address: string; windowMs: number }
  | { sg: 'limit-login-forgiven'; address: string }
  | { sg: 'limit-give-back'; kind: ClaimKind; key: string; dimension: Dimension; rate: number; burst: number; tokens: number }
  // Traffic quotas: bytes taken in chunks from the primary's ledger, given back unused; usage for the admin endpoint.
  | { sg: 'limit-quota-take'; seq: number; user: string; period: QuotaPeriod; limits: QuotaLimits; direction: QuotaDirection; want: number; force: boolean }
  | { sg: 'limit-quota-give-back'; user: string; period: QuotaPeriod; direction: QuotaDirection; bytes: number }
  | { sg: 'limit-quota-usage'; seq: number; period: QuotaPeriod };

export type ToWorker =
  | { sg: 'peer'; worker: number; port: number; host: string }
  | { sg: 'peer-gone'; worker: number }
  | { sg: 'claim'; seq: number; worker: number; ip: string; port: number | null }
  | { sg: 'release'; worker: number; ip: string; port: number | null }
  | { sg: 'claimed'; seq: number; error?: string }
  | { sg: 'request'; seq: number; what: 'status' | 'sample' | 'reload' | 'metrics' }
  | { sg: 'drain'; seq: number; deadlineMs: number }
  | { sg: 'limit-claimed'; seq: number; slots: number }
  | { sg: 'limit-recall'; kind: ClaimKind; key: string; recall: number }
  | { sg: 'limit-leased'; seq: number; tokens: number }
  | { sg: 'limit-counted'; seq: number; failures: number }
  | { sg: 'limit-quota-taken'; seq: number; granted: number; up: number; down: number }
  | { sg: 'limit-quota-used'; seq: number; users: UserUsage[] };

export function isToPrimary(message: unknown): message is ToPrimary {
  return typeof message === 'object' && message !== null && typeof (message as { sg?: unknown }).sg === 'string';
}

export const isToWorker = isToPrimary as (message: unknown) => message is ToWorker;

/** Sends when the channel is still open (a dying worker's channel closes under us). */
export function sendTo(worker: Worker, message: ToWorker): void {
  if (worker.isConnected()) worker.send(message, undefined, () => {});
}

export function sendToPrimary(message: ToPrimary): void {
  if (process.connected && process.send) process.send(message, undefined, {}, () => {});
}
