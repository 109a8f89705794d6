// The helper's handles are type-tagged externals: an entry point given another kind of handle, or
// no handle at all, throws a TypeError instead of reading memory as the wrong struct; a second close
// is a no-op. (With SOCKSGATE_NATIVE=0 the helper is not loaded and there is nothing to check.)
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { nativeAddon } from '../../src/native/addon.js';

const udpOwner = { deliver: (): void => undefined, onError: (): void => undefined };

test('native handles: the wrong kind or a foreign value is refused, a second close is a no-op', { skip: process.env.SOCKSGATE_NATIVE === '0' ? 'the helper is turned off in this pass' : false }, async () => {
  const addon = nativeAddon();
  assert.ok(addon, 'the helper is loaded in this pass');
  const [relay] = addon.udpBind(udpOwner, false);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const listener = addon.listen({ accepted: () => null }, fd);
  try {
    for (const [call, name] of [
      [() => addon.tunnelClose(relay), 'tunnel'],
      [() => addon.connWrite(listener, Buffer.from('x')), 'connection'],
      [() => addon.udpSend(listener, null, Buffer.from('x'), 9, '127.0.0.1', 0), 'relay socket'],
      [() => addon.listenClose(relay), 'listener'],
      [() => addon.udpClose({}), 'relay socket'],
      [() => addon.connClose(42), 'connection'],
      [() => addon.tunnelInfo(null), 'tunnel'],
    ] as const) {
      assert.throws(call, (error: Error) => error instanceof TypeError && error.message === `not a ${name} handle`, `refused as not a ${name} handle`);
    }
    addon.udpClose(relay);
    addon.udpClose(relay);
    assert.equal(addon.udpSend(relay, null, Buffer.from('x'), 9, '127.0.0.1', 0), -9, 'a closed relay socket refuses with EBADF');
    addon.listenClose(listener);
    addon.listenClose(listener);
  } finally {
    addon.udpClose(relay);
    addon.listenClose(listener);
    await new Promise((resolve) => server.close(resolve));
  }
});
