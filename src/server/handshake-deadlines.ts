/** A session whose handshake can run out of time. */
export interface HandshakeTimed {
  timedOut(kind: 'handshake'): void;
}

/**
 * The handshake deadlines of one server's sessions, on one timer. Every session gets the same time
 * from when it is added, so deadlines come in the order sessions were added and the timer only ever
 * waits for the first. A Node timer made and cancelled per session costs more than a map entry (and
 * with few sessions in their handshake at once, Node makes and drops its list for the duration too).
 */
export class HandshakeDeadlines {
  /** Deadlines (performance.now() ms) in the order they fall: a session added again moves to the end. */
  private readonly waiting = new Map<HandshakeTimed, number>();
  private timer: NodeJS.Timeout | null = null;
  /** Whether the timer keeps the process alive: while a session waits, as a timer of its own would. */
  private held = false;

  constructor(readonly timeoutMs: number) {}

  /** `session`'s handshake has timeoutMs from `now` (performance.now()), replacing a deadline it had. */
  add(session: HandshakeTimed, now: number): void {
    this.waiting.delete(session);
    this.waiting.set(session, now + this.timeoutMs);
    if (this.timer === null) this.arm(this.timeoutMs);
    else if (!this.held) {
      this.timer.ref();
      this.held = true;
    }
  }

  /** `session`'s handshake is over (or it is closing): no deadline any more. */
  remove(session: HandshakeTimed): void {
    this.waiting.delete(session);
    // The timer stays for the next session (most come soon), without keeping the process alive.
    if (this.waiting.size === 0 && this.held) {
      this.timer!.unref();
      this.held = false;
    }
  }

  /** Drops every deadline and the timer (the server is closing). Idempotent. */
  close(): void {
    this.waiting.clear();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.held = false;
  }

  /** Sessions with a deadline. */
  get size(): number {
    return this.waiting.size;
  }

  private arm(delay: number): void {
    this.timer = setTimeout(this.expire, delay);
    this.held = true;
  }

  private readonly expire = (): void => {
    this.timer = null;
    this.held = false;
    const now = performance.now();
    for (const [session, deadline] of this.waiting) {
      if (deadline > now) {
        // (A session timed out here may have made way for a new one that armed the timer already.)
        if (this.timer === null) this.arm(deadline - now);
        return;
      }
      this.waiting.delete(session);
      session.timedOut('handshake');
    }
  };
}
