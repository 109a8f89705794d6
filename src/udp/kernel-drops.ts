import { readFileSync } from 'node:fs';
import type { UdpStats } from './stats.js';

/**
 * Datagrams the kernel dropped at the relay sockets of this process before we could read them (a
 * full receive queue), dgram and native relays alike: Linux reports a per-socket count in the last column
 * ("drops") of /proc/self/net/udp and udp6. Read when metrics are asked for, never on the hot path;
 * what a socket dropped after the last reading and before it closed is not seen. The native helper
 * is read the same way until it counts them itself (SO_RXQ_OVFL).
 */
export class KernelDrops {
  /** Tracked relay sockets by local port (each bound on the unspecified address): drops already counted. */
  private readonly seen = new Map<number, number>();
  /**
   * Tracked sockets by inode: the fixed port's, which shares its port with sibling workers' sockets
   * (SO_REUSEPORT) or is bound on one address, so only its inode names its line.
   */
  private readonly seenInodes = new Map<number, number>();
  private available = process.platform === 'linux';

  constructor(private readonly stats: UdpStats) {}

  /** A relay socket bound on all addresses at `port` (it starts with no drops). */
  track(port: number): void {
    this.seen.set(port, 0);
  }

  untrack(port: number): void {
    this.seen.delete(port);
  }

  /** A socket named by its inode (it starts with no drops); a negative inode (none known) is ignored. */
  trackInode(inode: number): void {
    if (inode >= 0) this.seenInodes.set(inode, 0);
  }

  untrackInode(inode: number): void {
    this.seenInodes.delete(inode);
  }

  /** Adds the drops the kernel reported since the last reading to `udp_dropped_total{reason="kernel-overflow"}`. */
  sample(): void {
    if (!this.available || (this.seen.size === 0 && this.seenInodes.size === 0)) return;
    for (const table of ['/proc/self/net/udp', '/proc/self/net/udp6']) {
      let text: string;
      try {
        text = readFileSync(table, 'latin1');
      } catch {
        // No such table (no IPv6) is fine; neither table means no procfs: stop trying.
        if (table.endsWith('udp')) this.available = false;
        continue;
      }
      this.add(text);
    }
  }

  private add(table: string): void {
    // "  sl  local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops"
    for (const line of table.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 13 || !fields[0]!.endsWith(':')) continue;
      const inode = Number(fields[9]);
      const counted = this.seenInodes.get(inode);
      if (counted !== undefined) {
        const drops = Number(fields[fields.length - 1]);
        if (Number.isSafeInteger(drops) && drops > counted) {
          this.stats.drops['kernel-overflow'] += drops - counted;
          this.seenInodes.set(inode, drops);
        }
        continue;
      }
      const [address, portHex] = fields[1]!.split(':');
      if (address === undefined || portHex === undefined || !/^0+$/.test(address)) continue;
      const port = Number.parseInt(portHex, 16);
      const before = this.seen.get(port);
      if (before === undefined) continue;
      const drops = Number(fields[fields.length - 1]);
      if (!Number.isSafeInteger(drops) || drops <= before) continue;
      this.stats.drops['kernel-overflow'] += drops - before;
      this.seen.set(port, drops);
    }
  }
}

/**
 * The inode of the one UDP socket of this network namespace bound on local `port`, -1 when there is
 * none or several (for a dgram socket, whose descriptor JavaScript cannot reach).
 */
export function inodeOfPort(port: number): number {
  let found = -1;
  for (const table of ['/proc/self/net/udp', '/proc/self/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 13 || !fields[0]!.endsWith(':')) continue;
      const portHex = fields[1]!.split(':')[1];
      if (portHex === undefined || Number.parseInt(portHex, 16) !== port) continue;
      if (found !== -1) return -1;
      found = Number(fields[9]);
    }
  }
  return Number.isSafeInteger(found) ? found : -1;
}
