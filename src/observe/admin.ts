import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { SocksServer } from '../server/server.js';
import { createMetrics } from './metrics.js';
import { STATUS_PAGE } from './status-page.js';

interface Sample {
  t: number;
  forwarded: number;
  delivered: number;
  forwardedBytes: number;
  deliveredBytes: number;
}

// One sample a second, five minutes of them, for the status page's charts.
const HISTORY = 300;

/**
 * The admin listener: /metrics (Prometheus), /healthz (alive), /readyz (accepting; 503 while
 * draining), /status (a page that updates itself) and /api/status (its data). It owns its HTTP
 * server and its sampling timer; close() releases both.
 */
export class AdminServer {
  private readonly http: Server;
  private readonly registry: Registry;
  private readonly history: Sample[] = [];
  private readonly sampler: NodeJS.Timeout;

  constructor(private readonly server: SocksServer) {
    this.registry = createMetrics(server);
    this.http = createServer((request, response) => {
      this.route(request.url ?? '/').then(
        ({ status, type, body }) => {
          response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
          response.end(body);
        },
        (error: Error) => {
          response.writeHead(500, { 'content-type': 'text/plain' });
          response.end(`error: ${error.message}\n`);
        },
      );
    });
    this.sample();
    this.sampler = setInterval(() => this.sample(), 1000);
    this.sampler.unref();
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        const address = this.http.address() as { address: string; port: number };
        resolve({ host: address.address, port: address.port });
      });
    });
  }

  close(): Promise<void> {
    clearInterval(this.sampler);
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }

  private sample(): void {
    const udp = this.server.udpStats;
    this.history.push({ t: Date.now() / 1000, forwarded: udp.forwardedDatagrams, delivered: udp.deliveredDatagrams, forwardedBytes: udp.forwardedBytes, deliveredBytes: udp.deliveredBytes });
    if (this.history.length > HISTORY) this.history.shift();
  }

  private async route(url: string): Promise<{ status: number; type: string; body: string }> {
    const path = url.split('?')[0];
    switch (path) {
      case '/metrics':
        return { status: 200, type: this.registry.contentType, body: await this.registry.metrics() };
      case '/healthz':
        return { status: 200, type: 'text/plain', body: 'ok\n' };
      case '/readyz':
        return this.server.ready ? { status: 200, type: 'text/plain', body: 'ready\n' } : { status: 503, type: 'text/plain', body: 'not ready: draining or not listening\n' };
      case '/':
      case '/status':
        return { status: 200, type: 'text/html; charset=utf-8', body: STATUS_PAGE };
      case '/api/status':
        return { status: 200, type: 'application/json', body: JSON.stringify(this.status()) };
      default:
        return { status: 404, type: 'text/plain', body: 'not found: try /metrics, /healthz, /readyz or /status\n' };
    }
  }

  private status(): Record<string, unknown> {
    const udp = this.server.udpStats;
    const tcp = this.server.stats;
    return {
      ready: this.server.ready,
      sessions: this.server.snapshot(),
      totals: {
        sessions: this.server.sessionCount,
        associations: udp.activeAssociations,
        clientDatagrams: udp.clientDatagrams,
        clientBytes: udp.clientBytes,
        deliveredDatagrams: udp.deliveredDatagrams,
        deliveredBytes: udp.deliveredBytes,
        dropped: udp.droppedTotal,
        authFailures: tcp.authFailures,
        denied: tcp.denied,
      },
      drops: udp.drops,
      history: [...this.history, { t: Date.now() / 1000, forwarded: udp.forwardedDatagrams, delivered: udp.deliveredDatagrams, forwardedBytes: udp.forwardedBytes, deliveredBytes: udp.deliveredBytes }],
    };
  }
}
