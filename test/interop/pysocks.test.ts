import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runPySocks } from '../helpers/python.js';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { startEcho, startSocks } from '../helpers/servers.js';


const SCRIPT = `
import socket, sys, socks
proxy_port, target_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None, sys.argv[4] or None
s = socks.socksocket(socket.AF_INET, socket.SOCK_STREAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, username=user, password=password)
s.settimeout(5)
try:
    s.connect(("127.0.0.1", target_port))
except socks.ProxyError as e:
    print("ERROR", type(e).__name__, e.msg)
    sys.exit(0)
data = bytes(range(256)) * 400
s.sendall(data)
got = b""
while len(got) < len(data):
    chunk = s.recv(65536)
    if not chunk: break
    got += chunk
print("OK" if got == data else "MISMATCH %d" % len(got), s.get_proxy_sockname())
`;


describe('PySocks (python3-socks) CONNECT through socksgate', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let open: Awaited<ReturnType<typeof startSocks>>;
  let guarded: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    echo = await startEcho();
    open = await startSocks();
    guarded = await startSocks({ users: UserStore.fromEntries([['dave', await hashPassword(Buffer.from('pw'), 10)]]) });
  });
  after(async () => {
    await Promise.all([echo.close(), open.close(), guarded.close()]);
  });

  test('no authentication: 100 KiB echo byte-exact', async () => {
    const result = await runPySocks(SCRIPT, [String(open.port), String(echo.port), '', '']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^OK \('127\.0\.0\.1', \d+\)/);
  });

  test('username/password, and a wrong password refused', async () => {
    const good = await runPySocks(SCRIPT, [String(guarded.port), String(echo.port), 'dave', 'pw']);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /^OK /);
    const bad = await runPySocks(SCRIPT, [String(guarded.port), String(echo.port), 'dave', 'wrong']);
    assert.equal(bad.code, 0, bad.stderr);
    assert.match(bad.stdout, /^ERROR \w+ .*SOCKS5 authentication failed/);
  });

  test('a refused target is reported as such', async () => {
    const closed = await startEcho();
    const port = closed.port;
    await closed.close();
    const result = await runPySocks(SCRIPT, [String(open.port), String(port), '', '']);
    assert.match(result.stdout, /^ERROR GeneralProxyError .*0x05: Connection refused/);
  });
});
