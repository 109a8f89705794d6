/** Why a datagram was not relayed. Bounded set: these become metric labels. */
export const DROP_REASONS = [
  'malformed', // shorter than its header, RSV not 0, unknown ATYP, bad domain length
  'source', // from an address or port that is not the association's client
  'ambiguous', // fixed-port mode: more than one association could own the sender
  'unknown-client', // fixed-port mode: no association for the sender
  'filtered', // a reply from an endpoint the client never sent to (address-and-port filtering)
  'too-large', // payload over udp.maxPayload, or a reply that no longer fits in one datagram
  'fragment-disabled', // FRAG not 0 while udp.fragments is drop
  'fragment-abandoned', // sequence broken: lower or missing FRAG, other destination, memory limit
  'fragment-timeout', // sequence not complete when the reassembly timer expired
  'dns', // the destination name did not resolve, or too many datagrams waited for it
  'denied', // a policy rule (or safe default) forbids the destination
  'rate-limited', // over the client's or user's UDP datagrams/s or bytes/s
  'quota', // the user's traffic quota has no bytes on hand (ran out, or the store's next chunk is on its way)
  'too-many-destinations', // over limits.destinationsPerAssociation
  'amplification', // replies over limits.amplificationRatio times what the client sent, plus the burst
  'unreachable', // the destination's family cannot be reached from this relay
  'send-error', // the operating system refused to send (EHOSTUNREACH, EMSGSIZE, ENOBUFS, …)
  'congested', // UDP over TCP: the oldest queued reply, dropped because the TCP connection could not keep up
  'kernel-overflow', // the relay socket's receive queue was full: the kernel dropped it before we could read it
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

/**
 * Counters of the UDP relay, shared by all associations of a server. Plain integers on the hot
 * path; exporters read them when asked.
 */
export class UdpStats {
  associationsOpened = 0;
  associationsClosed = 0;
  /** Datagrams and payload bytes the clients sent us (header included in nothing below). */
  clientDatagrams = 0;
  clientBytes = 0;
  /** Datagrams and payload bytes sent on to destinations. */
  forwardedDatagrams = 0;
  forwardedBytes = 0;
  /** Datagrams and payload bytes destinations sent back. */
  replyDatagrams = 0;
  replyBytes = 0;
  /** Replies delivered to clients. */
  deliveredDatagrams = 0;
  deliveredBytes = 0;
  /** Datagrams carrying FRAG ≠ 0, and sequences reassembled into one datagram. */
  fragments = 0;
  reassembled = 0;
  /** Fixed-port mode with workers: datagrams this worker received for another worker's association and passed on. */
  steeredDatagrams = 0;
  readonly drops: Record<DropReason, number> = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;

  get activeAssociations(): number {
    return this.associationsOpened - this.associationsClosed;
  }

  get droppedTotal(): number {
    let total = 0;
    for (const reason of DROP_REASONS) total += this.drops[reason];
    return total;
  }
}
