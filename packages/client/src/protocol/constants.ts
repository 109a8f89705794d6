// Wire constants of SOCKS5 (RFC 1928), its username/password sub-negotiation (RFC 1929) and the
// FWD UDP extension. Every other file names these instead of writing numbers.

export const SOCKS_VERSION = 0x05;
export const AUTH_VERSION = 0x01;

export const Method = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;

export const Command = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
  /** hev-socks5's "FWD UDP": datagrams carried in frames on the TCP connection (see docs/udp-over-tcp.md). */
  FWD_UDP: 0x05,
} as const;

export const AddressType = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export const AuthStatus = {
  SUCCESS: 0x00,
  FAILURE: 0x01,
} as const;

export type MethodCode = (typeof Method)[keyof typeof Method];
export type CommandCode = (typeof Command)[keyof typeof Command];
export type AddressTypeCode = (typeof AddressType)[keyof typeof AddressType];
export type ReplyCode = (typeof Reply)[keyof typeof Reply];

const replyText: Record<number, string> = {
  0x00: 'succeeded',
  0x01: 'general SOCKS server failure',
  0x02: 'connection not allowed by ruleset',
  0x03: 'network unreachable',
  0x04: 'host unreachable',
  0x05: 'connection refused',
  0x06: 'TTL expired',
  0x07: 'command not supported',
  0x08: 'address type not supported',
};

const commandText: Record<number, string> = { 0x01: 'connect', 0x02: 'bind', 0x03: 'udp', 0x05: 'udp-over-tcp' };

const methodText: Record<number, string> = {
  0x00: 'no authentication',
  0x01: 'GSSAPI',
  0x02: 'username/password',
  0xff: 'no acceptable methods',
};

const hex = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;

/** "0x05 connection refused": for logs and error messages. */
export function describeReply(code: number): string {
  return `${hex(code)} ${replyText[code] ?? 'unassigned reply code'}`;
}

/** "connect", "bind", "udp", or "unknown command 0x09". */
export function describeCommand(code: number): string {
  return commandText[code] ?? `unknown command ${hex(code)}`;
}

export function describeMethod(code: number): string {
  return `${hex(code)} ${methodText[code] ?? 'unassigned method'}`;
}

export function isCommand(code: number): code is CommandCode {
  return code === Command.CONNECT || code === Command.BIND || code === Command.UDP_ASSOCIATE || code === Command.FWD_UDP;
}

/** The largest UDP payload over IPv4: 65535 - 8 (UDP header) - 20 (IPv4 header). */
export const MAX_UDP_PAYLOAD = 65507;
