// A UDP peer on its own thread, so it sends and answers while the test's event loop (and the
// in-process server on it) is busy: the way a separate host bursts at a relay socket.
//   echo: answers every datagram at once, from the same socket.
//   burst: sends datagrams of the given sizes to a port, then wakes the waiting main thread.
import { createSocket } from 'node:dgram';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

type Job = { kind: 'echo'; answered: SharedArrayBuffer } | { kind: 'burst'; port: number; sizes: number[]; signal: SharedArrayBuffer };

if (!isMainThread && parentPort) {
  const job = workerData as Job;
  const socket = createSocket('udp4');
  if (job.kind === 'echo') {
    const answered = new Int32Array(job.answered);
    socket.on('message', (data, from) =>
      socket.send(data, from.port, from.address, () => {
        Atomics.add(answered, 0, 1);
        Atomics.notify(answered, 0);
      }),
    );
    socket.bind(0, '127.0.0.1', () => parentPort!.postMessage(socket.address().port));
    parentPort.on('message', () => socket.close(() => parentPort!.close()));
  } else {
    const flag = new Int32Array(job.signal);
    socket.bind(0, '127.0.0.1', () => {
      let left = job.sizes.length;
      for (const [i, size] of job.sizes.entries()) {
        socket.send(Buffer.alloc(size, i), job.port, '127.0.0.1', () => {
          if (--left > 0) return;
          Atomics.store(flag, 0, 1);
          Atomics.notify(flag, 0);
          socket.close(() => parentPort!.close());
        });
      }
    });
  }
}

export interface ThreadEcho {
  readonly port: number;
  /** Datagrams answered so far. */
  answered(): number;
  /**
   * Blocks this thread (and so everything on its event loop) until `count` datagrams in all have
   * been answered, or 10 s have passed; true if they were.
   */
  blockUntilAnswered(count: number): boolean;
  close(): Promise<void>;
}

/** A UDP echo on its own thread (127.0.0.1). */
export async function startThreadEcho(): Promise<ThreadEcho> {
  const shared = new SharedArrayBuffer(4);
  const answered = new Int32Array(shared);
  const worker = new Worker(new URL(import.meta.url), { workerData: { kind: 'echo', answered: shared } satisfies Job });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    port,
    answered: () => Atomics.load(answered, 0),
    blockUntilAnswered: (count) => {
      const deadline = Date.now() + 10_000;
      for (let now = Atomics.load(answered, 0); now < count; now = Atomics.load(answered, 0)) {
        const left = deadline - Date.now();
        if (left <= 0) return false;
        Atomics.wait(answered, 0, now, left);
      }
      return true;
    },
    close: async () => {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage('close');
      await exited;
    },
  };
}

/**
 * Sends datagrams of `sizes` bytes to 127.0.0.1:`port` from another thread while this thread is
 * blocked (so nothing on this event loop reads them meanwhile); returns once all were sent.
 */
export async function burstWhileBlocked(port: number, sizes: number[]): Promise<void> {
  const count = sizes.length;
  const signal = new SharedArrayBuffer(4);
  const flag = new Int32Array(signal);
  const worker = new Worker(new URL(import.meta.url), { workerData: { kind: 'burst', port, sizes, signal } satisfies Job });
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  // Blocks this thread until the worker has sent everything (bounded: 10 s).
  Atomics.wait(flag, 0, 0, 10_000);
  const sent = Atomics.load(flag, 0) === 1;
  await exited;
  if (!sent) throw new Error(`the burst of ${count} datagrams was not sent within 10 s`);
}
