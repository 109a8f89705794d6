import { isIP, isIPv4, isIPv6 } from 'node:net';

/** A host and port to listen on or send to. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses "127.0.0.1:1080", "[::1]:1080" or "localhost:1080". With `defaultPort`, a bare host
 * ("10.0.0.53", "::1", "[::1]") is accepted too. Returns a reason string when the text is not valid.
 */
export function parseHostPort(text: string, defaultPort?: number): HostPort | string {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (!isIPv6(host)) return `"${host}" inside [] is not an IPv6 address`;
  } else if (isIPv6(text)) {
    if (defaultPort === undefined) return `write an IPv6 address with a port as [${text}]:PORT`;
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
    if (!isIPv4(host) && host !== 'localhost') return `"${host}" is not an IPv4 address, [IPv6] address or localhost`;
  }
  if (portText === undefined || portText === '') {
    if (defaultPort === undefined) return 'a port is missing: expected HOST:PORT such as 127.0.0.1:1080 or [::1]:1080';
    return { host, port: defaultPort };
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return `port "${portText}" is not a number from 0 to 65535`;
  return { host, port };
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  if (isIP(host) === 6) {
    const lower = host.toLowerCase();
    return lower === '::1' || lower === '0:0:0:0:0:0:0:1' || (lower.startsWith('::ffff:127.') && isIPv4(lower.slice(7)));
  }
  return false;
}

/**
 * A destination "host:port" where host may also be a domain name ("example.org:53", "[2001:db8::1]:53").
 * Returns a reason string when the text is not valid.
 */
export function parseDestination(text: string, defaultPort?: number): HostPort | string {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  let host: string;
  let portText: string | undefined;
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (!isIPv6(host)) return `"${host}" inside [] is not an IPv6 address`;
  } else if (isIPv6(text)) {
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
    if (!isIPv4(host) && !/^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/.test(host)) {
      return `"${host}" is not an IP address or a host name`;
    }
  }
  if (portText === undefined || portText === '') {
    if (defaultPort === undefined) return `a port is missing: expected HOST:PORT, got "${text}"`;
    return { host, port: defaultPort };
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port "${portText}" is not a number from 1 to 65535`;
  return { host, port };
}
