import { Method, type MethodCode } from 'socksgate-client/protocol';

/**
 * RFC 1928 §3 method selection. With users configured only username/password (0x02) is acceptable:
 * NO AUTHENTICATION is never selected then. Without users only 0x00 is, so a client that insists on
 * credentials learns that the server does not check them instead of being silently let through.
 */
export function selectMethod(offered: readonly number[], requireCredentials: boolean): MethodCode {
  const wanted = requireCredentials ? Method.USERNAME_PASSWORD : Method.NO_AUTH;
  return offered.includes(wanted) ? wanted : Method.NO_ACCEPTABLE;
}
