import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SocksClient, type SocksRemoteHost } from 'socks';
import { UserStore, hashPassword } from '../../src/server/users.js';
import { Peer } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';

describe('the socks npm client through socksgate', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let socks: Awaited<ReturnType<typeof startSocks>>;
  before(async () => {
    echo = await startEcho();
    socks = await startSocks({ users: UserStore.fromEntries([['erin', await hashPassword(Buffer.from('hunter2'), 10)]]) });
  });
  after(async () => {
    await Promise.all([echo.close(), socks.close()]);
  });

  const proxy = () => ({ host: '127.0.0.1', port: socks.port, type: 5 as const, userId: 'erin', password: 'hunter2' });

  test('CONNECT with username/password', async () => {
    const { socket } = await SocksClient.createConnection({ proxy: proxy(), command: 'connect', destination: { host: '127.0.0.1', port: echo.port } });
    const peer = new Peer(socket);
    peer.write('npm socks');
    assert.equal((await peer.read(9)).toString(), 'npm socks');
    peer.destroy();
  });

  test('BIND: the bound address, the incoming connection, data both ways', async () => {
    const client = new SocksClient({ proxy: proxy(), command: 'bind', destination: { host: '127.0.0.1', port: 0 } });
    const bound = new Promise<SocksRemoteHost>((resolve, reject) => {
      client.on('bound', (info) => resolve(info.remoteHost!));
      client.on('error', reject);
    });
    const established = new Promise<{ peer: Peer; remote: SocksRemoteHost }>((resolve, reject) => {
      client.on('established', (info) => resolve({ peer: new Peer(info.socket), remote: info.remoteHost! }));
      client.on('error', reject);
    });
    client.connect();
    const where = await bound;
    assert.equal(where.host, '127.0.0.1');
    const incoming = await Peer.connect(where.port, where.host);
    const { peer, remote } = await established;
    assert.equal(remote.port, incoming.socket.localPort);
    incoming.write('hello binder');
    assert.equal((await peer.read(12)).toString(), 'hello binder');
    peer.write('hello back');
    assert.equal((await incoming.read(10)).toString(), 'hello back');
    peer.destroy();
    incoming.destroy();
  });

  test('a wrong password makes the client fail with an authentication error', async () => {
    await assert.rejects(
      SocksClient.createConnection({ proxy: { ...proxy(), password: 'nope' }, command: 'connect', destination: { host: '127.0.0.1', port: echo.port } }),
      /Authentication/i,
    );
  });
});
