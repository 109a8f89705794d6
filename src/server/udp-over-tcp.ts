import type { Socket } from 'node:net';
import type { CommandContext } from './context.js';
import { openAssociation } from './associate.js';
import { addressFromHost } from 'socksgate-client/protocol';
import { Reply } from 'socksgate-client/protocol';
import { UotFrameReader } from 'socksgate-client/protocol';
import type { ClientChannel } from '../udp/association.js';
import type { UdpStats } from '../udp/stats.js';
import { admitQuota } from './admit.js';

// Replies queued for a congested TCP connection before the oldest are dropped (UDP semantics).
const QUEUE_LIMIT = 256 * 1024;

/**
 * Replies to the client as UDP-over-TCP frames. While the socket can take more, frames are written
 * at once; when it is congested they wait in a bounded queue that drops its oldest first, because a
 * stale datagram is worth less than a fresh one and buffering without bound helps nobody.
 */
export class FrameChannel implements ClientChannel {
  private readonly queue: Buffer[] = [];
  private queued = 0;

  constructor(
    private readonly socket: Socket,
    private readonly stats: UdpStats,
    private readonly limit = QUEUE_LIMIT,
  ) {
    socket.on('drain', this.flush);
  }

  // Frames are copies: the payload is never kept.
  readonly keepsPayload = false;

  send(header: Buffer, payload: Buffer, _port: number): null {
    // The relay's reply header is RSV RSV FRAG ATYP ADDR PORT; a frame wants DATLEN DATLEN HDRLEN ATYP ADDR PORT.
    const frame = Buffer.allocUnsafe(header.length + payload.length);
    frame.writeUInt16BE(payload.length, 0);
    frame[2] = header.length;
    header.copy(frame, 3, 3);
    payload.copy(frame, header.length);
    if (this.queue.length === 0 && !this.socket.writableNeedDrain) {
      this.socket.write(frame);
      return null;
    }
    this.queue.push(frame);
    this.queued += frame.length;
    while (this.queued > this.limit && this.queue.length > 1) {
      this.queued -= this.queue.shift()!.length;
      this.stats.drops.congested++;
    }
    return null;
  }

  release(): void {
    this.socket.off('drain', this.flush);
    this.queue.length = 0;
    this.queued = 0;
  }

  private readonly flush = (): void => {
    while (this.queue.length > 0 && !this.socket.writableNeedDrain) {
      const frame = this.queue.shift()!;
      this.queued -= frame.length;
      this.socket.write(frame);
    }
  };
}

/**
 * hev-socks5's FWD UDP (command 0x05): after the reply, datagrams travel as frames on this TCP
 * connection both ways, and leave the proxy as native UDP. Same auth, rules, limits and counters as
 * UDP ASSOCIATE; the session ends with the connection.
 */
export async function runUdpOverTcp(session: CommandContext): Promise<void> {
  if (!(await admitQuota(session))) return;
  const socket = session.socket;
  const association = openAssociation(session, socket.remoteAddress ?? '', { shared: true, declaredPort: 0 });
  if (!association) return;
  try {
    if (!(await association.open())) return;
  } catch (error) {
    if (!session.isClosed) session.fail(Reply.GENERAL_FAILURE, `udp-over-tcp: cannot open a relay socket: ${(error as NodeJS.ErrnoException).code}`);
    return;
  }
  if (session.isClosed) return;
  association.attach(new FrameChannel(socket, session.ctx.udp.stats));
  // The association itself: its up/down and describe() (no closures).
  session.meter = association;
  session.details = association;
  socket.setNoDelay(true);
  // Like hev-socks5-server, the reply's address is the unspecified one: clients ignore it.
  session.reply(Reply.SUCCEEDED, addressFromHost('0.0.0.0', 0));

  const { early, ended } = session.detach();
  const reader = new UotFrameReader((frame) => association.fromFrame(frame.address, frame.payload));
  const frames = (chunk: Buffer): void => {
    const broken = reader.push(chunk);
    if (!broken || session.isClosed) return;
    // A broken frame leaves no way to find the next one: the stream is over.
    association.drop('malformed', 1, broken.message);
    session.close(`bad frame: ${broken.message}`);
  };
  socket.on('data', frames);
  socket.once('end', () => session.close('ok'));
  socket.once('close', () => session.close('ok'));
  if (early.length > 0) frames(early);
  if (ended) session.close('ok');
  else socket.resume();
}
