// UDP ASSOCIATE's control connection once the reply is out: watched by the native helper (the
// net.Socket let go) in the native pass of `npm test`, by its net.Socket in the TypeScript pass.
// Either way its end — FIN or RST — ends the association at once (RFC 1928 §7), and the server's
// own close ends the connection.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import type { SessionEnd } from '../../src/server/server.js';
import { udpIo } from '../../src/native/addon.js';
import { waitFor } from '../helpers/peer.js';
import { startSocks } from '../helpers/servers.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

test('ASSOCIATE control connection: FIN and RST each end their association, the relay keeps working until then, descriptors return', async () => {
  const echo = await startUdpEcho();
  const socks = await startSocks();
  const ends: SessionEnd[] = [];
  socks.server.on('session-end', (end) => ends.push(end));
  try {
    const warm = await openAssociation(socks.port);
    warm.close();
    await waitFor(() => socks.server.sessionCount === 0, 3000, 'the warm-up to end');
    ends.length = 0;
    const fds = openFds();

    const [byFin, byReset] = [await openAssociation(socks.port), await openAssociation(socks.port)];
    assert.equal(byFin.reply.code, 0);
    await waitFor(() => socks.server.snapshot().filter((s) => s.control === 'native').length === (udpIo().native ? 2 : 0) && socks.server.sessionCount === 2, 3000, 'both handed over (native pass only)');
    for (const [i, a] of [byFin, byReset].entries()) {
      await a.sendTo('127.0.0.1', echo.port, Buffer.from(`still relayed ${i}`));
      assert.equal(unwrap((await a.udp.receive(3000)).data).data.toString(), `still relayed ${i}`);
    }
    // Bytes on the control connection are discarded, not a reason to end.
    byFin.control.write(Buffer.from('ignored'));
    byFin.control.socket.end();
    await waitFor(() => ends.length === 1, 3000, 'the FIN to end its session');
    assert.equal(ends[0]!.result, 'ok');
    byReset.control.socket.resetAndDestroy();
    await waitFor(() => ends.length === 2, 3000, 'the RST to end its session');
    assert.equal(ends[1]!.result, 'client error ECONNRESET');
    assert.equal(socks.server.udpStats.activeAssociations, 0);
    byFin.udp.close();
    byReset.udp.close();
    await waitFor(() => openFds() <= fds, 3000, `descriptors back to ${fds} (now ${openFds()})`);

    // The server's end closes a watched connection too.
    const last = await openAssociation(socks.port);
    await waitFor(() => socks.server.sessionCount === 1, 3000, 'the last session');
    await socks.close();
    await last.control.closed(3000);
    last.udp.close();
  } finally {
    echo.close();
    await socks.close();
  }
});
