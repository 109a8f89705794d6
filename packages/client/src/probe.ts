import { randomBytes } from 'node:crypto';
import type { UdpAssociation, UdpMessage } from './associate.js';

export interface ProbeOptions {
  /** An endpoint that sends every datagram back unchanged (a UDP echo). */
  readonly host: string;
  readonly port: number;
  /** Search range for the payload size (default 1 to 65507 minus the largest IPv4 header, 65497). */
  readonly min?: number;
  readonly max?: number;
  /** How long to wait for each echo (default 1000 ms) and how many tries per size (default 2). */
  readonly timeoutMs?: number;
  readonly attempts?: number;
  /** Told each size tried and whether it came back. */
  readonly onProbe?: (size: number, ok: boolean) => void;
}

/** Sends one datagram of `size` bytes and waits for its exact echo. */
export async function roundTrip(association: UdpAssociation, host: string, port: number, size: number, timeoutMs: number): Promise<boolean> {
  const payload = randomBytes(size);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      association.off('message', onMessage);
      association.off('close', onClose);
      resolve(ok);
    };
    const onMessage = (message: UdpMessage): void => {
      if (message.payload.equals(payload)) done(true);
    };
    const onClose = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    association.on('message', onMessage);
    association.on('close', onClose);
    association.send(payload, host, port).catch(() => done(false));
  });
}

/**
 * The largest payload that makes the round trip through the proxy to an echo target, found by
 * binary search on real datagrams. Returns 0 when not even `min` bytes come back.
 */
export async function maxDatagramSize(association: UdpAssociation, options: ProbeOptions): Promise<number> {
  let low = options.min ?? 1;
  let high = options.max ?? 65497;
  const attempts = options.attempts ?? 2;
  const timeoutMs = options.timeoutMs ?? 1000;
  const works = async (size: number): Promise<boolean> => {
    for (let i = 0; i < attempts; i++) {
      if (await roundTrip(association, options.host, options.port, size, timeoutMs)) {
        options.onProbe?.(size, true);
        return true;
      }
    }
    options.onProbe?.(size, false);
    return false;
  };
  if (!(await works(low))) return 0;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (await works(middle)) low = middle;
    else high = middle - 1;
  }
  return low;
}
