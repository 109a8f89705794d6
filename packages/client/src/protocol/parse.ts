import type { SocksError } from './errors.js';

/**
 * What every parser returns: a value and how many bytes it used, "need more bytes" (never an
 * error: TCP may deliver a message in any number of pieces), or a protocol error.
 */
export type ParseResult<T> =
  | { readonly status: 'ok'; readonly value: T; readonly size: number }
  | { readonly status: 'more' }
  | { readonly status: 'error'; readonly error: SocksError };

export const MORE: { readonly status: 'more' } = Object.freeze({ status: 'more' });

export function ok<T>(value: T, size: number): ParseResult<T> {
  return { status: 'ok', value, size };
}

export function fail(error: SocksError): { readonly status: 'error'; readonly error: SocksError } {
  return { status: 'error', error };
}
