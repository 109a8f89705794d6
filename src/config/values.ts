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
