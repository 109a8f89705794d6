import { describeReply, type ReplyCode } from './constants.js';

/**
 * A SOCKS protocol failure. `code` is stable for programs; `reply` is the RFC 1928 reply code to
 * send (server side) or that was received (client side), or null when the protocol has no reply
 * for the situation and the connection is simply closed.
 */
export class SocksError extends Error {
  readonly code: string;
  readonly reply: ReplyCode | null;

  constructor(code: string, message: string, reply: ReplyCode | null = null, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SocksError';
    this.code = code;
    this.reply = reply;
  }

  override toString(): string {
    const tail = this.reply === null ? '' : ` (reply ${describeReply(this.reply)})`;
    return `${this.name} [${this.code}]: ${this.message}${tail}`;
  }
}
