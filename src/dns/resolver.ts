import { lookup } from 'node:dns/promises';
import { Resolver as DnsResolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { Reply } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';

/** Turns a domain name into addresses to try, in order. */
export interface Resolver {
  resolve(host: string): Promise<string[]>;
  /** A fresh cached answer, without waiting: the UDP relay's fast path. */
  cached(host: string): string[] | undefined;
}

export interface ResolverOptions {
  /** DNS servers as "IP" or "IP:PORT" / "[IPv6]:PORT"; empty means the system's resolver. */
  readonly servers: readonly string[];
  /** Cap on cached names (oldest evicted first). */
  readonly cacheSize?: number;
  /** Per-query timeout in milliseconds for configured servers. */
  readonly timeoutMs?: number;
  /** How long answers of the system's resolver are kept (it does not report TTLs). */
  readonly systemTtlMs?: number;
  /** Told about every lookup that was not answered from the cache: seconds taken and success. */
  readonly onLookup?: (seconds: number, ok: boolean) => void;
}

/**
 * The system's resolver (getaddrinfo: /etc/hosts, then the system's DNS) when no servers are
 * configured; otherwise queries those servers for A and AAAA and caches answers for their TTL.
 */
export function createResolver(options: ResolverOptions): Resolver {
  return options.servers.length === 0 ? new SystemResolver(options) : new ServerResolver(options);
}

interface CacheEntry {
  readonly addresses: string[];
  readonly expires: number;
}

/** Answers kept until they expire, bounded in size, and one query in flight per name. */
abstract class CachingResolver implements Resolver {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<string[]>>();
  private readonly cacheSize: number;
  private readonly onLookup: ((seconds: number, ok: boolean) => void) | undefined;

  constructor(options: ResolverOptions) {
    this.cacheSize = options.cacheSize ?? 10_000;
    this.onLookup = options.onLookup;
  }

  cached(host: string): string[] | undefined {
    const entry = this.cache.get(host.toLowerCase());
    if (entry === undefined) return undefined;
    if (entry.expires > Date.now()) return entry.addresses;
    this.cache.delete(host.toLowerCase());
    return undefined;
  }

  resolve(host: string): Promise<string[]> {
    if (isIP(host)) {
      // An address with a zone ("::1%eth0") is meaningless to a proxy's peer and unsafe to pass on.
      return host.includes('%') ? Promise.reject(dnsFailure(host, undefined)) : Promise.resolve([host]);
    }
    const name = host.toLowerCase();
    const hit = this.cached(name);
    if (hit) return Promise.resolve(hit);
    let pending = this.inFlight.get(name);
    if (!pending) {
      const started = performance.now();
      const report = (ok: boolean): void => this.onLookup?.((performance.now() - started) / 1000, ok);
      pending = this.query(name)
        .then(({ addresses, ttlMs }) => {
          report(true);
          if (ttlMs > 0) {
            if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
            this.cache.set(name, { addresses, expires: Date.now() + ttlMs });
          }
          return addresses;
        })
        .catch((error: unknown) => {
          report(false);
          throw error;
        })
        .finally(() => this.inFlight.delete(name));
      this.inFlight.set(name, pending);
    }
    return pending;
  }

  protected abstract query(name: string): Promise<{ addresses: string[]; ttlMs: number }>;
}

/** getaddrinfo: /etc/hosts, then the system's DNS. It reports no TTL, so answers are kept briefly. */
class SystemResolver extends CachingResolver {
  private readonly ttlMs: number;

  constructor(options: ResolverOptions) {
    super(options);
    this.ttlMs = options.systemTtlMs ?? 30_000;
  }

  protected async query(name: string): Promise<{ addresses: string[]; ttlMs: number }> {
    try {
      const answers = await lookup(name, { all: true, verbatim: true });
      return { addresses: answers.map((a) => a.address), ttlMs: this.ttlMs };
    } catch (error) {
      throw dnsFailure(name, error);
    }
  }
}

/** The configured DNS servers, A and AAAA, each answer kept for its TTL. */
class ServerResolver extends CachingResolver {
  private readonly dns: DnsResolver;

  constructor(options: ResolverOptions) {
    super(options);
    this.dns = new DnsResolver({ timeout: options.timeoutMs ?? 2000, tries: 2 });
    this.dns.setServers([...options.servers]);
  }

  protected async query(name: string): Promise<{ addresses: string[]; ttlMs: number }> {
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
    return { addresses, ttlMs: ttl * 1000 };
  }
}

function dnsFailure(host: string, cause: unknown): SocksError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'ENOTFOUND';
  return new SocksError('ERR_DNS', `cannot resolve ${host}: ${code}`, Reply.HOST_UNREACHABLE, { cause });
}
