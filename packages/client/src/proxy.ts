import { SocksError } from './protocol/errors.js';

/** Where the proxy is and how to talk to it. */
export interface ProxyOptions {
  readonly host: string;
  readonly port: number;
  /** RFC 1929 credentials; offered only when both are given. */
  readonly username?: string;
  readonly password?: string;
  /**
   * Who resolves destination names: the proxy (true, the default, as socks5h:// says) or this host
   * before the request (false, as socks5:// says). Local resolution sends every name to the local
   * resolver, outside the proxy.
   */
  readonly remoteDns?: boolean;
}

/** A proxy URL (`socks5h://user:pass@host:port`, `socks5://…`), a URL object, or the options themselves. */
export type ProxyInput = string | URL | ProxyOptions;

/**
 * One proxy, or a chain of them: the first is reached directly, each next one through a CONNECT
 * from the one before it, and the request goes to the last.
 */
export type ProxyChain = ProxyInput | readonly ProxyInput[];

/**
 * Parses `socks5h://[user:pass@]host[:port]` (port 1080 when absent). The scheme says who resolves
 * names, as in curl: socks5h:// the proxy, socks5:// this host. Options without `remoteDns` (and
 * `socks://`) send names to the proxy.
 */
export function parseProxy(input: ProxyInput): ProxyOptions {
  if (typeof input === 'object' && !(input instanceof URL)) {
    if (!input.host || !Number.isInteger(input.port) || input.port < 1 || input.port > 65535) {
      throw new SocksError('ERR_PROXY_OPTIONS', `proxy needs a host and a port from 1 to 65535, got ${JSON.stringify({ host: input.host, port: input.port })}`);
    }
    return { ...input, remoteDns: input.remoteDns ?? true };
  }
  let url: URL;
  try {
    url = input instanceof URL ? input : new URL(input);
  } catch {
    throw new SocksError('ERR_PROXY_URL', `"${String(input)}" is not a proxy URL; expected socks5://[user:pass@]host:port or socks5h://…`);
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (scheme !== 'socks5' && scheme !== 'socks5h' && scheme !== 'socks') {
    throw new SocksError('ERR_PROXY_URL', `proxy URL scheme "${scheme}" is not socks5 or socks5h (${url.href})`);
  }
  if (!url.hostname) throw new SocksError('ERR_PROXY_URL', `proxy URL ${url.href} has no host`);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const options: { -readonly [K in keyof ProxyOptions]: ProxyOptions[K] } = {
    host,
    port: url.port ? Number(url.port) : 1080,
    remoteDns: scheme !== 'socks5',
  };
  if (url.username) options.username = decodeURIComponent(url.username);
  if (url.password) options.password = decodeURIComponent(url.password);
  return options;
}

/** The hops of a proxy or chain, parsed; at least one. */
export function parseChain(input: ProxyChain): ProxyOptions[] {
  const list = Array.isArray(input) ? (input as readonly ProxyInput[]) : [input as ProxyInput];
  if (list.length === 0) throw new SocksError('ERR_PROXY_OPTIONS', 'a proxy chain needs at least one proxy');
  return list.map(parseProxy);
}
