import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createResolver } from '../../src/dns/resolver.js';
import { Gate, type GateLimits, type GateRules } from '../../src/policy/gate.js';
import { AuthLockout } from '../../src/policy/lockout.js';
import { Policy, type PolicyConfig } from '../../src/policy/policy.js';
import { startDnsmasq } from '../helpers/servers.js';

const NONE = { udpPacketsPerSecond: 0, udpBytesPerSecond: 0, tcpBytesPerSecond: 0 };
const LIMITS: GateLimits = {
  sessionsPerClient: 2,
  sessionsPerUser: 3,
  client: NONE,
  user: NONE,
  destinationsPerAssociation: 16,
  amplificationRatio: 2,
  amplificationBurst: 100,
};
const POLICY: PolicyConfig = { rules: [], defaultAction: 'allow', groups: {}, allowLoopbackTargets: false, ownAddresses: [] };

function rules(policy: Partial<PolicyConfig> = {}, limits: Partial<GateLimits> = {}): GateRules {
  return { policy: new Policy({ ...POLICY, ...policy }), limits: { ...LIMITS, ...limits } };
}

const noDns = createResolver({ servers: ['127.0.0.1:9'] });

describe('the policy gate', () => {
  test('session caps count per client address (IPv4-mapped or not) and per user; leave() gives the place back', () => {
    const gate = new Gate(rules(), noDns, null);
    assert.deepEqual(gate.enter('127.0.0.2', null), []);
    assert.deepEqual(gate.enter('::ffff:127.0.0.2', 'ann'), [], 'the same client through a dual-stack listener');
    assert.equal(gate.enter('127.0.0.2', 'ann'), 'client address');
    assert.deepEqual(gate.enter('127.0.0.3', 'ann'), []);
    assert.deepEqual(gate.enter('127.0.0.4', 'ann'), []);
    assert.equal(gate.enter('127.0.0.5', 'ann'), 'user', 'the fourth session of ann');
    assert.deepEqual(gate.enter('127.0.0.5', null), [], 'a refusal for the user counted nothing for the client');
    gate.leave('127.0.0.2', null, []);
    assert.deepEqual(gate.enter('127.0.0.2', null), []);
  });

  test('rate buckets are shared by the sessions of one client and one user, and kept across a reload', () => {
    const limited = { ...NONE, udpPacketsPerSecond: 3 };
    const gate = new Gate(rules({}, { client: limited, user: limited }), noDns, null);
    const first = gate.enter('127.0.0.2', 'ann');
    const second = gate.enter('::ffff:127.0.0.2', 'ann');
    assert.ok(Array.isArray(first) && Array.isArray(second));
    assert.equal(first.length, 2, 'client and user buckets');
    assert.equal(first[0], second[0]);
    assert.equal(first[1], second[1]);
    for (let i = 0; i < 3; i++) assert.equal(first[0]!.takeDatagram(1), true);
    gate.update(rules({}, { client: limited, user: limited }));
    assert.equal(second[0]!.takeDatagram(1), false, 'a reload grants no fresh burst');
    gate.leave('127.0.0.2', 'ann', first);
    gate.leave('127.0.0.2', 'ann', second);
    const again = gate.enter('127.0.0.2', 'ann');
    assert.ok(Array.isArray(again));
    assert.notEqual(again[0], first[0], 'buckets go with their last session');
  });

  test('logins: counted as failures at once, blocked by IPv4 address whatever form it comes in', () => {
    const gate = new Gate(rules(), noDns, new AuthLockout({ slowAfter: 10, blockAfter: 3, blockMs: 60_000, windowMs: 60_000 }));
    const begun = [gate.loginBegins('127.0.0.2'), gate.loginBegins('::ffff:127.0.0.2'), gate.loginBegins('127.0.0.2')];
    assert.deepEqual(begun.map((b) => b.blocksNow), [false, false, true], 'three guesses in flight block the address');
    assert.equal(gate.loginChecked('127.0.0.2', true), false, 'a right password in flight does not pass');
    assert.equal(gate.blocked('::ffff:127.0.0.2'), true);
    assert.equal(gate.loginBegins('127.0.0.2').wait, -1);
    assert.equal(gate.blocked('127.0.0.3'), false);
    const other = gate.loginBegins('127.0.0.3');
    assert.equal(gate.loginChecked('127.0.0.3', true), true);
    assert.equal(other.wait, 0);
  });

  test('a destination memo decides once per destination and decides again after a reload', () => {
    const gate = new Gate(rules({ rules: [{ action: 'deny', destinations: ['198.51.100.0/24'] }] }), noDns, null);
    const denied: string[] = [];
    const memo = gate.memo('127.0.0.2', null, { policyDenied: (host, port, _ip, reason) => denied.push(`${host}:${port} ${reason}`) });
    assert.equal(memo.allows('198.51.100.7', '198.51.100.7', 53), false);
    assert.equal(memo.allows('198.51.100.7', '198.51.100.7', 53), false);
    assert.equal(memo.allows('203.0.113.7', '203.0.113.7', 53), true);
    assert.equal(memo.allows('127.0.0.1', '::ffff:127.0.0.1', 53), false, 'loopback, however written');
    assert.equal(denied.length, 2, 'each denial is told once');
    assert.match(denied[0]!, /^198\.51\.100\.7:53 rule 1/);
    assert.equal(memo.allows('name.test', null, 53), null, 'a CIDR rule needs the address');
    gate.update(rules({ rules: [{ action: 'deny', destinations: ['203.0.113.0/24'] }] }));
    assert.equal(memo.allows('198.51.100.7', '198.51.100.7', 53), true);
    assert.equal(memo.allows('203.0.113.7', '203.0.113.7', 53), false);
  });

  test('names: decided by their text when the rules can, else by the address DNS gives (real DNS on loopback)', async () => {
    const dns = await startDnsmasq({ 'inside.test': ['198.51.100.9'], 'outside.test': ['203.0.113.9'] });
    try {
      const resolver = createResolver({ servers: [dns.server] });
      const gate = new Gate(rules({ rules: [{ action: 'deny', destinations: ['.blocked.test'] }, { action: 'deny', destinations: ['198.51.100.0/24'] }] }), resolver, null);
      assert.deepEqual(await gate.destination('127.0.0.2', null, 'connect', 'a.blocked.test', 443), {
        allowed: false,
        reason: 'rule 1: deny to .blocked.test',
      });
      const inside = await gate.destination('127.0.0.2', null, 'connect', 'inside.test', 443);
      assert.equal(inside.allowed, false);
      assert.equal(inside.allowed === false && inside.address, '198.51.100.9');
      assert.deepEqual(await gate.destination('127.0.0.2', null, 'connect', 'outside.test', 443), { allowed: true, addresses: ['203.0.113.9'] });
      const missing = await gate.destination('127.0.0.2', null, 'connect', 'missing.test', 443);
      assert.equal(missing.allowed, null);

      const memo = gate.memo('127.0.0.2', null, { policyDenied: () => {} });
      const answers: Array<[boolean, string | undefined]> = [];
      const byName = memo.decideName('x.blocked.test', 53, false, (allowed, ip) => answers.push([allowed, ip]), () => assert.fail('no lookup'));
      assert.equal(byName, true, 'decided at once by the name');
      const looked = new Promise<void>((resolve, reject) => {
        const now = memo.decideName('inside.test', 53, false, (allowed, ip) => (answers.push([allowed, ip]), resolve()), (why) => reject(new Error(why)));
        assert.equal(now, true, 'the resolver cached inside.test above');
      });
      await looked;
      assert.deepEqual(answers, [
        [false, undefined],
        [false, '198.51.100.9'],
      ]);
      memo.close();
    } finally {
      await dns.close();
    }
  });

  test('amplification: replies may total ratio × what the client sent, plus the burst', () => {
    const gate = new Gate(rules(), noDns, null);
    assert.equal(gate.amplifies(100, 0, 300), false);
    assert.equal(gate.amplifies(100, 250, 51), true);
    gate.update(rules({}, { amplificationRatio: 0 }));
    assert.equal(gate.amplifies(0, 1e9, 1e6), false, 'ratio 0: no limit');
  });
});
