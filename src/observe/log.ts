import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export interface LogOptions {
  readonly level: string;
  readonly format: 'auto' | 'json' | 'pretty';
}

/** JSON lines on stdout, or pino-pretty for a terminal. Writes are synchronous: nothing is lost on exit. */
export function createLogger(options: LogOptions): Logger {
  const usePretty = options.format === 'pretty' || (options.format === 'auto' && process.stdout.isTTY === true);
  const base = { level: options.level, base: { pid: process.pid } };
  if (usePretty) return pino(base, pretty({ sync: true, colorize: process.stdout.isTTY === true, ignore: 'pid,hostname' }));
  return pino(base, pino.destination({ dest: 1, sync: true }));
}
