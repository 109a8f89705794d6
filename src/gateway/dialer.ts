import type { Socket } from 'node:net';
import { ControlConnection } from 'socksgate-client/control';
import type { SocksAddress } from 'socksgate-client/protocol';
import { Command, Reply } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import type { DialOrigin, Dialer } from '../server/dialer.js';
import { Lease, type Upstream, type UpstreamPool } from './pool.js';

const ignore = (): void => {};

/**
 * CONNECT in gateway mode: the upstream's CONNECT, on the upstream the pool ranks first for this
 * client. Names go to the upstream unresolved (it resolves them). An upstream that cannot be reached
 * or fails the handshake is reported and the next one is tried; an upstream's refusal of the
 * destination is the client's answer (its reply code passed on).
 */
export class GatewayDialer implements Dialer {
  constructor(
    private readonly pool: UpstreamPool,
    private readonly timeoutMs: number,
  ) {}

  async dial(destination: SocksAddress, signal: AbortSignal, _addresses?: readonly string[], origin?: DialOrigin): Promise<Socket> {
    const ranked = this.pool.rank(origin?.client ?? '');
    if (ranked.length === 0) throw this.pool.noUpstream();
    const deadline = Date.now() + this.timeoutMs;
    let lastError: Error | null = null;
    for (const upstream of ranked) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      let control: ControlConnection;
      try {
        control = await ControlConnection.open(upstream.proxy, { timeoutMs: remaining, signal });
      } catch (error) {
        if (signal.aborted) throw error;
        this.pool.dialFailed(upstream, error as Error);
        lastError = error as Error;
        continue;
      }
      return this.request(control, upstream, destination);
    }
    throw new SocksError('ERR_UPSTREAMS_FAILED', `no upstream could be reached: ${lastError?.message ?? 'connect timed out'}`, Reply.GENERAL_FAILURE, { cause: lastError });
  }

  /** The CONNECT on an open control connection; the socket is the session's once the reply is in. */
  private async request(control: ControlConnection, upstream: Upstream, destination: SocksAddress): Promise<Socket> {
    try {
      await control.request(Command.CONNECT, destination);
    } catch (error) {
      control.destroy();
      // The upstream answered for the destination, or it ran out of time reaching it.
      if (error instanceof SocksError && error.reply !== null) throw error;
      throw new SocksError('ERR_UPSTREAM_CONNECT', `via ${upstream.name}: ${(error as Error).message}`, Reply.HOST_UNREACHABLE, { cause: error });
    }
    const early = control.release();
    const socket = control.socket;
    if (early.length > 0) socket.unshift(early);
    // Taken out: the error ends the session's relay (a plain close would wait for the client's side).
    const lease = new Lease(upstream, (reason) => socket.destroy(new Error(reason)));
    // The relay listens for errors once it runs; until then this one keeps an early error harmless.
    socket.on('error', ignore);
    socket.once('close', () => lease.release());
    return socket;
  }
}
