import { lookup } from 'node:dns/promises';
import { Resolver as DnsResolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { Reply } from '../protocol/constants.js';
import { SocksError } from '../protocol/errors.js';

/** Turns a domain name into addresses to try, in order. */
export interface Resolver {
  resolve(host: string): Promise<string[]>;
}

export interface ResolverOptions {
  /** DNS servers as "IP" or "IP:PORT" / "[IPv6]:PORT"; empty means the system's resolver. */
  readonly servers: readonly string[];
  /** Cap on cached names (oldest evicted first). */
  readonly cacheSize?: number;
  /** Per-query timeout in milliseconds for configured servers. */
  readonly timeoutMs?: number;
}

/**
 * The system's resolver (getaddrinfo: /etc/hosts, then the system's DNS) when no servers are
 * configured; otherwise queries those servers for A and AAAA and caches answers for their TTL.
 */
export function createResolver(options: ResolverOptions): Resolver {
  return options.servers.length === 0 ? new SystemResolver() : new CachingResolver(options);
}

class SystemResolver implements Resolver {
  async resolve(host: string): Promise<string[]> {
    if (isIP(host)) return [host];
    try {
      const answers = await lookup(host, { all: true, verbatim: true });
      return answers.map((a) => a.address);
    } catch (error) {
      throw dnsFailure(host, error);
    }
  }
}

interface CacheEntry {
  readonly addresses: string[];
  readonly expires: number;
}

class CachingResolver implements Resolver {
  private readonly dns: DnsResolver;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<string[]>>();
  private readonly cacheSize: number;

  constructor(options: ResolverOptions) {
    this.dns = new DnsResolver({ timeout: options.timeoutMs ?? 2000, tries: 2 });
    this.dns.setServers([...options.servers]);
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  resolve(host: string): Promise<string[]> {
    if (isIP(host)) return Promise.resolve([host]);
    const name = host.toLowerCase();
    const cached = this.cache.get(name);
    if (cached && cached.expires > Date.now()) return Promise.resolve(cached.addresses);
    let pending = this.inFlight.get(name);
    if (!pending) {
      pending = this.query(name).finally(() => this.inFlight.delete(name));
      this.inFlight.set(name, pending);
    }
    return pending;
  }

  private async query(name: string): Promise<string[]> {
    const [v6, v4] = await Promise.allSettled([this.dns.resolve6(name, { ttl: true }), this.dns.resolve4(name, { ttl: true })]);
    const six = v6.status === 'fulfilled' ? v6.value : [];
    const four = v4.status === 'fulfilled' ? v4.value : [];
    if (six.length === 0 && four.length === 0) {
      throw dnsFailure(name, v4.status === 'rejected' ? v4.reason : v6.status === 'rejected' ? v6.reason : undefined);
    }
    // Alternate the families, IPv6 first, so one unreachable family costs one attempt, not all.
    const addresses: string[] = [];
    for (let i = 0; i < Math.max(six.length, four.length); i++) {
      if (six[i]) addresses.push(six[i]!.address);
      if (four[i]) addresses.push(four[i]!.address);
    }
    const ttl = Math.min(...six.map((a) => a.ttl), ...four.map((a) => a.ttl));
    if (ttl > 0) {
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(name, { addresses, expires: Date.now() + ttl * 1000 });
    }
    return addresses;
  }
}

function dnsFailure(host: string, cause: unknown): SocksError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'ENOTFOUND';
  return new SocksError('ERR_DNS', `cannot resolve ${host}: ${code}`, Reply.HOST_UNREACHABLE, { cause });
}
