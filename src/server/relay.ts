import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface RelayOptions {
  /** Inactivity in milliseconds after which both sockets are destroyed; 0 disables. */
  readonly idleMs: number;
  /** Bytes the client sent before the relay began; they go to the target first. */
  readonly early?: Buffer;
  /** The client half-closed before the relay began: the target gets a FIN after `early`. */
  readonly clientEnded?: boolean;
  /** Streams to pass each direction through (rate limits), or none. */
  readonly up?: Duplex;
  readonly down?: Duplex;
}

/**
 * Pipes `client` and `target` both ways with backpressure. A FIN from one side is passed on to the
 * other (half-close), and the relay ends when both sockets have closed, when either errors (both
 * are destroyed), or when nothing moves for `idleMs`. Resolves with 'closed', 'idle' or the first
 * error. The caller still owns both sockets.
 */
export function relay(client: Socket, target: Socket, options: RelayOptions): Promise<string> {
  const { idleMs, early, clientEnded = false, up, down } = options;
  return new Promise((resolve) => {
    let end = 'closed';
    let open = 2;
    const fail = (reason: string): void => {
      if (end === 'closed') end = reason;
      client.destroy();
      target.destroy();
      up?.destroy();
      down?.destroy();
    };
    const onClose = (): void => {
      if (--open > 0) return;
      client.setTimeout(0);
      up?.destroy();
      down?.destroy();
      resolve(end);
    };
    client.on('error', (error: NodeJS.ErrnoException) => fail(`client ${error.code ?? error.message}`));
    target.on('error', (error: NodeJS.ErrnoException) => fail(`target ${error.code ?? error.message}`));
    // A throttle fails when the user's quota ran out: that is the relay's end.
    up?.on('error', (error: Error) => fail(error.message));
    down?.on('error', (error: Error) => fail(error.message));
    for (const socket of [client, target]) {
      if (socket.closed) process.nextTick(onClose);
      else socket.once('close', onClose);
    }
    if (client.closed || target.closed) fail('closed early');
    // Every byte passes through the client socket, so its inactivity is the relay's.
    if (idleMs > 0) client.setTimeout(idleMs, () => fail('idle'));
    const toTarget = up ?? target;
    if (up) up.pipe(target);
    if (early && early.length > 0) toTarget.write(early);
    if (clientEnded) toTarget.end();
    else client.pipe(toTarget);
    if (down) target.pipe(down).pipe(client);
    else target.pipe(client);
  });
}
