import { isIPv4, isIPv6 } from 'node:net';
import { AddressType, Reply } from './constants.js';
import { SocksError } from './errors.js';
import { canonicalIpv6, ipv6FromBytes, ipv6ToBytes } from './ipv6.js';
import { fail, MORE, ok, type ParseResult } from './parse.js';

export type HostType = 'ipv4' | 'ipv6' | 'domain';

/** A SOCKS address: DST.ADDR/DST.PORT of a request, BND.ADDR/BND.PORT of a reply, or a UDP header's. */
export interface SocksAddress {
  /** Dotted IPv4, RFC 5952 IPv6 text, or a domain name. */
  readonly host: string;
  readonly port: number;
  readonly type: HostType;
}

const MAPPED_PREFIX = '::ffff:';

/** "::ffff:192.0.2.1" → "192.0.2.1" (an IPv4-mapped IPv6 address, as dual-stack sockets report IPv4 peers); others unchanged. */
export function unmapAddress(ip: string): string {
  return ip.length > MAPPED_PREFIX.length && ip.slice(0, MAPPED_PREFIX.length).toLowerCase() === MAPPED_PREFIX && isIPv4(ip.slice(MAPPED_PREFIX.length)) ? ip.slice(MAPPED_PREFIX.length) : ip;
}

/**
 * The address of a host seen on a socket. IPv4-mapped IPv6 (what a dual-stack socket reports for an
 * IPv4 peer) becomes plain IPv4, so replies carry ATYP 1 for IPv4 peers.
 */
export function addressFromHost(host: string, port: number): SocksAddress {
  if (isIPv4(host)) return { host, port, type: 'ipv4' };
  // A zone ("fe80::1%eth0", as Node reports link-local peers) means nothing to a SOCKS peer: drop it.
  const zone = host.indexOf('%');
  const bare = zone >= 0 ? host.slice(0, zone) : host;
  if (isIPv6(bare)) {
    const lower = bare.toLowerCase();
    if (lower.startsWith(MAPPED_PREFIX) && isIPv4(lower.slice(MAPPED_PREFIX.length))) {
      return { host: lower.slice(MAPPED_PREFIX.length), port, type: 'ipv4' };
    }
    return { host: canonicalIpv6(bare), port, type: 'ipv6' };
  }
  return { host, port, type: 'domain' };
}

/** "127.0.0.1:1080", "[::1]:1080", "example.org:443". */
export function formatAddress(address: SocksAddress): string {
  return address.type === 'ipv6' ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Bytes that `writeAddress` uses for this address: ATYP, the address and the port. */
export function addressSize(address: SocksAddress): number {
  switch (address.type) {
    case 'ipv4':
      return 1 + 4 + 2;
    case 'ipv6':
      return 1 + 16 + 2;
    case 'domain':
      return 1 + 1 + address.host.length + 2;
  }
}

/** Writes ATYP, address and port at `offset`; returns the offset after them. */
export function writeAddress(buf: Buffer, offset: number, address: SocksAddress): number {
  let at = offset;
  switch (address.type) {
    case 'ipv4': {
      buf[at++] = AddressType.IPV4;
      const parts = address.host.split('.');
      for (let i = 0; i < 4; i++) buf[at++] = Number(parts[i]);
      break;
    }
    case 'ipv6': {
      buf[at++] = AddressType.IPV6;
      const bytes = ipv6ToBytes(address.host);
      for (let i = 0; i < 16; i++) buf[at++] = bytes[i] ?? 0;
      break;
    }
    case 'domain': {
      checkDomain(address.host);
      buf[at++] = AddressType.DOMAIN;
      buf[at++] = address.host.length;
      at += buf.write(address.host, at, 'latin1');
      break;
    }
  }
  buf.writeUInt16BE(address.port, at);
  return at + 2;
}

// Domain names travel as single bytes each way (latin1), so any byte string round-trips exactly.
// Internationalised names must be converted to their ASCII form (url.domainToASCII) first.
function checkDomain(host: string): void {
  if (host.length === 0 || host.length > 255) {
    throw new SocksError('ERR_DOMAIN_LENGTH', `domain name must be 1 to 255 bytes, got ${host.length}`);
  }
  if (/[^\x00-\xff]/.test(host)) {
    throw new SocksError('ERR_DOMAIN_CHARS', `domain name "${host}" has non-ASCII characters; pass url.domainToASCII(name)`);
  }
}

const HOSTNAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Reads ATYP, address and port at `offset`. Errors carry the reply code RFC 1928 gives for them:
 * 0x08 for an unknown address type; an empty domain name cannot name a host (0x04).
 */
export function parseAddress(buf: Buffer, offset: number): ParseResult<SocksAddress> {
  if (buf.length <= offset) return MORE;
  const atyp = buf[offset];
  switch (atyp) {
    case AddressType.IPV4: {
      if (buf.length < offset + 7) return MORE;
      const host = `${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}.${buf[offset + 4]}`;
      return ok({ host, port: buf.readUInt16BE(offset + 5), type: 'ipv4' }, 7);
    }
    case AddressType.IPV6: {
      if (buf.length < offset + 19) return MORE;
      const host = ipv6FromBytes(buf.subarray(offset + 1, offset + 17));
      return ok({ host, port: buf.readUInt16BE(offset + 17), type: 'ipv6' }, 19);
    }
    case AddressType.DOMAIN: {
      if (buf.length < offset + 2) return MORE;
      const length = buf[offset + 1] as number;
      if (length === 0) {
        return fail(new SocksError('ERR_EMPTY_DOMAIN', 'domain name of length 0', Reply.HOST_UNREACHABLE));
      }
      if (buf.length < offset + 2 + length + 2) return MORE;
      const host = buf.toString('latin1', offset + 2, offset + 2 + length);
      // Only letters, digits, '-', '_' and '.': a NUL or other byte would let a name read one way by
      // rules and another by the resolver (which stops at NUL). Non-ASCII names arrive as punycode.
      if (!HOSTNAME.test(host)) {
        return fail(new SocksError('ERR_DOMAIN_CHARS', `domain name ${JSON.stringify(host)} has characters no host name has`, Reply.HOST_UNREACHABLE));
      }
      return ok({ host, port: buf.readUInt16BE(offset + 2 + length), type: 'domain' }, 2 + length + 2);
    }
    default:
      return fail(
        new SocksError(
          'ERR_ADDRESS_TYPE',
          `address type 0x${(atyp ?? 0).toString(16).padStart(2, '0')} is not 0x01 (IPv4), 0x03 (domain) or 0x04 (IPv6)`,
          Reply.ADDRESS_TYPE_NOT_SUPPORTED,
        ),
      );
  }
}
