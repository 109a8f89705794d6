import ipaddr from 'ipaddr.js';

/** Why a CIDR range (or a bare address) is invalid, or null. */
export function checkCidr(text: string): string | null {
  try {
    if (text.includes('/')) ipaddr.parseCIDR(text);
    else ipaddr.parse(text);
    return null;
  } catch {
    return `"${text}" is not an address or CIDR range (such as 10.0.0.0/8 or 2001:db8::/32)`;
  }
}

/** Why a port spec ("443", "1000-2000") is invalid, or null. */
export function checkPortSpec(spec: string | number): string | null {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(spec).trim());
  if (!m) return `"${spec}" is not a port or a range such as 1000-2000`;
  const low = Number(m[1]);
  const high = m[2] === undefined ? low : Number(m[2]);
  if (low > 65535 || high > 65535 || low > high) return `"${spec}" is not a range within 0-65535`;
  return null;
}

/** Why an upstream URL (`socks5://[user:pass@]host:port`) is invalid, or null (the message never repeats the URL: it may hold a password). */
export function checkUpstreamUrl(text: string): string | null {
  const expected = 'expected socks5://[user:pass@]host:port';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not a URL; ${expected}`;
  }
  if (url.protocol !== 'socks5:' && url.protocol !== 'socks5h:') return `scheme "${url.protocol.slice(0, -1)}" is not socks5; ${expected}`;
  if (!url.hostname) return `no host; ${expected}`;
  if (!url.port) return `no port; ${expected}`;
  if ((url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) return `a path, query or fragment after the port; ${expected}`;
  if ((url.username === '') !== (url.password === '')) return 'a username without a password or the other way round; give both (user:pass@) or neither';
  return null;
}

/** host:port of a valid upstream URL (how duplicates are recognised). */
export function upstreamEndpoint(text: string): string {
  try {
    const url = new URL(text);
    return `${url.hostname}:${url.port}`;
  } catch {
    return text;
  }
}

/**
 * Why a limit store (`local`, or `redis://[user:pass@]host[:port][/db]`, `rediss://` for TLS) is
 * invalid, or null (the message never repeats the URL: it may hold a password).
 */
export function checkStoreUrl(text: string): string | null {
  const expected = 'expected local, redis://[user:pass@]host[:port][/db] or rediss://… for TLS';
  if (text === 'local') return null;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not "local" and not a URL; ${expected}`;
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') return `scheme "${url.protocol.slice(0, -1)}" is not redis or rediss; ${expected}`;
  if (!url.hostname) return `no host; ${expected}`;
  if (url.search || url.hash) return `a query or fragment; ${expected}`;
  const db = url.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d{1,5}$/.test(db)) return `the database "${db}" is not a number; ${expected}`;
  return null;
}
