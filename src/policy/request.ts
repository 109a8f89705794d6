/** The commands a rule can name, as config and logs spell them. */
export type CommandName = 'connect' | 'bind' | 'udp';

/** What a command asks policy about. Handlers describe; policy decides. */
export interface PolicyRequest {
  /** The client's IP (IPv4-mapped addresses unmapped). */
  readonly client: string;
  /** The authenticated user, or null without authentication. */
  readonly user: string | null;
  readonly command: CommandName;
  /** The destination as requested: a domain name or an IP. */
  readonly host: string;
  readonly port: number;
  /** For a domain destination, the resolved address being checked; for an IP destination, that IP. */
  readonly ip: string | null;
}

/** A matcher's answer: yes, no, or "cannot tell until the name is resolved". */
export type Match = 'yes' | 'no' | 'unknown';

/** One condition of a rule. */
export interface Matcher {
  match(request: PolicyRequest): Match;
  toString(): string;
}
