import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { UserStore, setUserInFile } from '../../src/server/users.js';

describe('users file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-users-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('passwd adds, then updates, keeping other lines and comments; the file is 0600', async () => {
    const file = join(dir, 'users.txt');
    await writeFile(file, '# staff\n');
    assert.equal(await setUserInFile(file, 'alice', Buffer.from('one')), 'added');
    assert.equal(await setUserInFile(file, 'bob', Buffer.from('two')), 'added');
    assert.equal(await setUserInFile(file, 'alice', Buffer.from('three')), 'updated');
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[0], '# staff');
    assert.match(lines[1]!, /^alice:\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.match(lines[2]!, /^bob:\$scrypt\$/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const store = await UserStore.load(file);
    assert.equal(store.size, 2);
    assert.equal(await store.verify('alice', Buffer.from('three')), true);
    assert.equal(await store.verify('alice', Buffer.from('one')), false);
    assert.equal(await store.verify('bob', Buffer.from('two')), true);
    // A remembered success does not let a wrong password in.
    assert.equal(await store.verify('bob', Buffer.from('two')), true);
    assert.equal(await store.verify('bob', Buffer.from('twO')), false);
    assert.equal(await store.verify('carol', Buffer.from('two')), false);
  });

  test('bad names and passwords are refused with the reason', async () => {
    const file = join(dir, 'bad.txt');
    await assert.rejects(setUserInFile(file, 'a:b', Buffer.from('x')), /must not contain ":"/);
    await assert.rejects(setUserInFile(file, 'ok', Buffer.alloc(0)), /1 to 255 bytes/);
    await assert.rejects(setUserInFile(file, 'ok', Buffer.alloc(256, 1)), /1 to 255 bytes/);
  });

  test('a malformed file names the line and the fix', async () => {
    const file = join(dir, 'broken.txt');
    await writeFile(file, 'alice:$scrypt$ln=14,r=8,p=1$c2FsdA==$aGFzaA==\nbob:plaintext\n');
    await assert.rejects(UserStore.load(file), (error: Error) => {
      assert.match(error.message, /line 2/);
      assert.match(error.message, /socksgate passwd/);
      return true;
    });
    await assert.rejects(UserStore.load(join(dir, 'missing.txt')), /cannot read it \(ENOENT\).*socksgate passwd/);
  });
});
