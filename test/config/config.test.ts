import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { OPTIONS } from '../../src/config/options.js';

describe('configuration', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'socksgate-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const file = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  test('defaults: loopback 1080, no users, info logs', async () => {
    const config = await loadConfig();
    assert.deepEqual(config.listen, ['127.0.0.1:1080']);
    assert.equal(config.users, undefined);
    assert.equal(config.handshakeTimeout, 10);
    assert.deepEqual(config.dns.servers, []);
    assert.equal(config.log.level, 'info');
  });

  test('file values, overridden by flags; durations with units', async () => {
    const path = await file('ok.yaml', 'listen: ["[::1]:1081"]\nidleTimeout: 5m\nbindTimeout: 1500ms\ndns:\n  servers: [127.0.0.1:5353]\nlog: { level: debug }\n');
    const config = await loadConfig({ file: path, flags: new Map<string, unknown>([['listen', ['127.0.0.1:0']], ['log.level', 'warn']]) });
    assert.deepEqual(config.listen, ['127.0.0.1:0']);
    assert.equal(config.idleTimeout, 300);
    assert.equal(config.bindTimeout, 1.5);
    assert.deepEqual(config.dns.servers, ['127.0.0.1:5353']);
    assert.equal(config.log.level, 'warn');
  });

  test('an invalid file is rejected with the key, the bad value and what is expected', async () => {
    const path = await file('bad.yaml', 'maxClients: lots\nlisten: ["127.0.0.1"]\ndns: { servers: ["not an ip"] }\nhandshakeTimeout: soon\n');
    await assert.rejects(loadConfig({ file: path }), (error: Error & { code: string }) => {
      assert.equal(error.code, 'ERR_CONFIG');
      assert.match(error.message, new RegExp(`maxClients in ${path}: got "lots"; expected number`));
      assert.match(error.message, /listen\[0\] in .*: got "127.0.0.1"; a port is missing: expected HOST:PORT/);
      assert.match(error.message, /dns.servers\[0\] in .*: got "not an ip"; "not an ip" is not an IPv4 address/);
      assert.match(error.message, /handshakeTimeout in .*: got "soon"; expected a duration/);
      return true;
    });
  });

  test('unknown keys are named with the keys that exist', async () => {
    const path = await file('unknown.yaml', 'listn: ["127.0.0.1:1080"]\ndns: { server: [] }\n');
    await assert.rejects(loadConfig({ file: path }), (error: Error) => {
      assert.match(error.message, /unknown key "listn"; known keys here: listen, users/);
      assert.match(error.message, /unknown key "dns.server"; known keys here: servers/);
      return true;
    });
  });

  test('a bad flag value names the flag', async () => {
    await assert.rejects(loadConfig({ flags: new Map([['maxClients', 0]]) }), /maxClients \(flag --max-clients\): got 0; Too small/);
  });

  test('limits.store: local or a redis URL; anything else is refused naming the key and why, never the password', async () => {
    const store = (value: string) => loadConfig({ file: undefined, flags: new Map([['limits.store', value]]) });
    assert.equal((await store('redis://u:secret@127.0.0.1:6380/2')).limits.store, 'redis://u:secret@127.0.0.1:6380/2');
    assert.equal((await store('rediss://cache.example:6380')).limits.store, 'rediss://cache.example:6380');
    assert.equal((await loadConfig({})).limits.store, 'local');
    await assert.rejects(store('memcached://127.0.0.1'), /limits\.store.*scheme "memcached" is not redis or rediss; expected local, redis:\/\//);
    await assert.rejects(store('redis://u:secret@127.0.0.1/db1'), (error: Error) => {
      assert.match(error.message, /limits\.store.*the database "db1" is not a number/);
      assert.doesNotMatch(error.message, /secret/);
      return true;
    });
    await assert.rejects(store('remote'), /limits\.store.*not "local" and not a URL/);
  });

  test('YAML syntax errors and non-mapping files are reported with the file name', async () => {
    await assert.rejects(loadConfig({ file: await file('syntax.yaml', 'listen: [\n') }), /syntax.yaml: not valid YAML/);
    await assert.rejects(loadConfig({ file: await file('list.yaml', '- a\n- b\n') }), /expected a mapping of keys/);
    await assert.rejects(loadConfig({ file: join(dir, 'nope.yaml') }), /cannot read it \(ENOENT\)/);
    assert.deepEqual((await loadConfig({ file: await file('empty.yaml', '') })).listen, ['127.0.0.1:1080']);
  });

  test('an open proxy on a reachable address is refused unless users or allowOpen are given', async () => {
    await assert.rejects(loadConfig({ flags: new Map([['listen', ['0.0.0.0:1080']]]) }), (error: Error & { code: string }) => {
      assert.equal(error.code, 'ERR_OPEN_PROXY');
      assert.match(error.message, /without users is an open proxy; add --users FILE/);
      return true;
    });
    await loadConfig({ flags: new Map<string, unknown>([['listen', ['0.0.0.0:1080']], ['allowOpen', true]]) });
    await loadConfig({ flags: new Map<string, unknown>([['listen', ['[::]:1080']], ['users', 'users.txt']]) });
    await loadConfig({ flags: new Map<string, unknown>([['listen', ['127.0.0.5:1080', '[::1]:1080', 'localhost:1']]]) });
  });

  test('udp keys: fixed port, advertise, filtering, and the RFC minimum for the reassembly timer', async () => {
    const path = await file('udp.yaml', 'udp:\n  port: 1080\n  advertise: 203.0.113.7\n  filtering: endpoint-independent\n  fragmentTimeout: 10s\n');
    const config = await loadConfig({ file: path });
    assert.deepEqual([config.udp.port, config.udp.advertise, config.udp.filtering, config.udp.fragmentTimeout], [1080, '203.0.113.7', 'endpoint-independent', 10]);
    assert.equal(config.udp.fragments, 'reassemble');
    await assert.rejects(loadConfig({ flags: new Map([['udp.advertise', '0.0.0.0']]) }), /udp.advertise \(flag --udp-advertise\): got "0.0.0.0"; must be an address clients can send to/);
    const bad = await file('udp-bad.yaml', 'udp:\n  port: 70000\n  advertise: proxy.example\n  fragmentTimeout: 2\n  filtering: cone\n');
    await assert.rejects(loadConfig({ file: bad }), (error: Error) => {
      assert.match(error.message, /udp.port in .*: got 70000; Too big/);
      assert.match(error.message, /udp.advertise in .*: got "proxy.example"; expected an IPv4 or IPv6 address/);
      assert.match(error.message, /udp.fragmentTimeout in .*: got 2; must be at least 5 seconds \(RFC 1928 §7\)/);
      assert.match(error.message, /udp.filtering in .*: got "cone"; expected one of "address-and-port"\|"endpoint-independent"/);
      return true;
    });
  });

  test('a rule naming an unknown group is refused', async () => {
    const path = await file('groups.yaml', 'groups: { staff: [alice] }\nrules:\n  - { action: allow, groups: [staf] }\n');
    await assert.rejects(loadConfig({ file: path }), /rules\[0\]\.groups\[0\] in .*: got "staf"; no group "staf" in groups \(known: staff\)/);
  });

  test('every key has a flag named after it and a description', () => {
    const kebab = (part: string): string => part.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    for (const option of OPTIONS) {
      assert.equal(option.flag, `--${option.key.split('.').map(kebab).join('-')}`, option.key);
      assert.ok(option.description.length > 10, option.key);
    }
    const flags = Object.fromEntries(OPTIONS.map((o) => [o.key, o.flag]));
    assert.equal(flags['dns.servers'], '--dns-servers');
    assert.equal(flags['udp.port'], '--udp-port');
    assert.equal(flags.allowLoopbackTargets, '--allow-loopback-targets');
    assert.equal(flags['limits.client.udpPacketsPerSecond'], '--limits-client-udp-packets-per-second');
    assert.equal(flags['auth.blockFor'], '--auth-block-for');
    assert.equal(OPTIONS.find((o) => o.key === 'rules')?.kind, 'yaml');
  });
});
