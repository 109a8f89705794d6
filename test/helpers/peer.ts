import { connect, isIPv6, type Socket } from 'node:net';

/** A test's end of a TCP connection: reads exact byte counts with deadlines, never sleeps. */
export class Peer {
  private buffered: Buffer[] = [];
  private size = 0;
  private waiters = new Set<() => void>();
  ended = false;
  isClosed = false;
  error: Error | null = null;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered.push(chunk);
      this.size += chunk.length;
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (error) => {
      this.error = error;
      this.notify();
    });
    socket.on('close', () => {
      this.isClosed = true;
      this.notify();
    });
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<Peer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new Peer(socket));
      });
    });
  }

  get available(): number {
    return this.size;
  }

  write(data: Buffer | Uint8Array | string): void {
    this.socket.write(data);
  }

  end(data?: Buffer): void {
    if (data) this.socket.end(data);
    else this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Exactly `n` bytes, or an error naming what arrived when the connection ends or time runs out. */
  async read(n: number, timeoutMs = 3000): Promise<Buffer> {
    await this.until(() => this.size >= n || this.ended || this.isClosed, timeoutMs, `${n} bytes`);
    if (this.size < n) {
      throw new Error(`connection ended after ${this.size} of ${n} bytes (${this.peek().toString('hex')})${this.error ? `: ${this.error.message}` : ''}`);
    }
    return this.take(n);
  }

  /** Everything until the peer closes its side. */
  async readToEnd(timeoutMs = 5000): Promise<Buffer> {
    await this.until(() => this.ended || this.isClosed, timeoutMs, 'the end of the stream');
    return this.take(this.size);
  }

  /** Resolves when the other side has closed the connection (FIN, RST or close); then closes ours. */
  async closed(timeoutMs = 3000): Promise<void> {
    await this.until(() => this.ended || this.isClosed, timeoutMs, 'the other side to close');
    this.socket.destroy();
  }

  private peek(): Buffer {
    return Buffer.concat(this.buffered);
  }

  private take(n: number): Buffer {
    const all = this.peek();
    this.buffered = n < all.length ? [all.subarray(n)] : [];
    this.size = all.length - n;
    return all.subarray(0, n);
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${this.size} bytes: ${this.peek().subarray(0, 64).toString('hex')})`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }
}

/** Polls `condition` until it holds or the deadline passes. */
export async function waitFor(condition: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export const hostForUrl = (host: string): string => (isIPv6(host) ? `[${host}]` : host);
