import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Policy, type PolicyConfig } from '../../src/policy/policy.js';
import type { PolicyRequest } from '../../src/policy/request.js';

const base: PolicyConfig = { rules: [], defaultAction: 'allow', groups: {}, allowLoopbackTargets: false, ownAddresses: ['192.0.2.7'] };
const ask = (over: Partial<PolicyRequest>): PolicyRequest => ({ client: '127.0.0.2', user: null, command: 'connect', host: '198.51.100.1', port: 443, ip: '198.51.100.1', ...over });

describe('policy decisions', () => {
  test('safe defaults: loopback, link-local, unspecified and own addresses are denied unless named', () => {
    const policy = new Policy(base);
    for (const ip of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1', '0.0.0.0', '::', '192.0.2.7']) {
      const decision = policy.decide(ask({ host: ip, ip }));
      assert.equal(decision?.allowed, false, ip);
      assert.match(decision!.reason, /^safe default: /, ip);
    }
    assert.equal(policy.decide(ask({}))?.allowed, true);
    assert.match(policy.decide(ask({ host: '127.0.0.1', ip: '127.0.0.1' }))!.reason, /--allow-loopback-targets/);
    const loopbackOk = new Policy({ ...base, allowLoopbackTargets: true });
    assert.equal(loopbackOk.decide(ask({ host: '::1', ip: '::1' }))?.allowed, true);
    assert.equal(loopbackOk.decide(ask({ host: '169.254.169.254', ip: '169.254.169.254' }))?.allowed, false, 'only loopback is opened');
    const named = new Policy({ ...base, rules: [{ action: 'allow', destinations: ['169.254.169.254'] }] });
    assert.equal(named.decide(ask({ host: '169.254.169.254', ip: '169.254.169.254' }))?.allowed, true);
    // BIND names who may connect in: nothing to guard.
    assert.equal(policy.decide(ask({ command: 'bind', host: '127.0.0.1', ip: '127.0.0.1' }))?.allowed, true);
  });

  test('first match wins; every condition of a rule must hold; the reason names the rule', () => {
    const policy = new Policy({
      ...base,
      groups: { staff: ['alice'] },
      rules: [
        { action: 'deny', name: 'no-ads', destinations: ['.ads.test'] },
        { action: 'allow', name: 'staff-web', groups: ['staff'], commands: ['connect'], ports: ['80', '443', '8000-8999'] },
        { action: 'deny', clients: ['127.0.0.2/32', '2001:db8::/32'] },
      ],
    });
    assert.deepEqual(policy.decide(ask({ host: 'x.ads.test', ip: null })), { allowed: false, reason: 'rule 1 "no-ads": deny to .ads.test' });
    assert.equal(policy.decide(ask({ user: 'alice', port: 8080 }))?.allowed, true);
    assert.match(policy.decide(ask({ user: 'alice', port: 8080 }))!.reason, /rule 2 "staff-web": allow group staff, command connect, port 80,443,8000-8999/);
    assert.equal(policy.decide(ask({ user: 'alice', port: 22 }))?.reason, 'rule 3: deny from 127.0.0.2/32, 2001:db8::/32');
    assert.equal(policy.decide(ask({ user: 'alice', command: 'udp', port: 443 }))?.allowed, false);
    assert.equal(policy.decide(ask({ client: '2001:db8::5' }))?.allowed, false);
    assert.equal(policy.decide(ask({ client: '127.0.0.3' }))?.reason, 'default action: allow');
    assert.equal(new Policy({ ...base, defaultAction: 'deny' }).decide(ask({}))?.reason, 'default action: deny');
  });

  test('a name is decided by name when it can be, else address by address', () => {
    const policy = new Policy({
      ...base,
      rules: [
        { action: 'allow', destinations: ['good.test'] },
        { action: 'deny', destinations: ['10.0.0.0/8'] },
      ],
    });
    assert.equal(policy.decide(ask({ host: 'good.test', ip: null }))?.allowed, true, 'allowed by its name');
    assert.equal(policy.decide(ask({ host: 'other.test', ip: null })), null, 'depends on its addresses');
    assert.equal(policy.decide(ask({ host: 'other.test', ip: '10.1.2.3' }))?.allowed, false, 'DNS cannot smuggle in 10.0.0.0/8');
    assert.equal(policy.decide(ask({ host: 'other.test', ip: '198.51.100.9' }))?.allowed, true);
    assert.equal(policy.decide(ask({ host: 'other.test', ip: '127.0.0.1' }))?.allowed, false, 'nor loopback');
  });

  test('suffixes with a trailing dot, IPv4-mapped ranges', () => {
    const policy = new Policy({ ...base, rules: [{ action: 'deny', destinations: ['.ads.test.', '::ffff:10.0.0.0/104'] }] });
    assert.equal(policy.decide(ask({ host: 'x.ads.test', ip: null }))?.allowed, false);
    assert.equal(policy.decide(ask({ host: 'x.ads.test.', ip: null }))?.allowed, false);
    assert.equal(policy.decide(ask({ host: '10.1.2.3', ip: '10.1.2.3' }))?.allowed, false);
    assert.equal(policy.decide(ask({ host: '::ffff:10.1.2.3', ip: '::ffff:10.1.2.3' }))?.allowed, false);
  });

  test('UDP ASSOCIATE itself: refused only when no datagram could be allowed', () => {
    const deny = new Policy({ ...base, rules: [{ action: 'deny', commands: ['udp'], clients: ['127.0.0.2'] }] });
    assert.equal(deny.decideAssociate('127.0.0.2', null).allowed, false);
    assert.equal(deny.decideAssociate('127.0.0.3', null).allowed, true);
    const perDatagram = new Policy({ ...base, defaultAction: 'deny', rules: [{ action: 'allow', commands: ['udp'], destinations: ['198.51.100.0/24'] }] });
    assert.equal(perDatagram.decideAssociate('127.0.0.2', null).allowed, true);
    assert.equal(new Policy({ ...base, defaultAction: 'deny' }).decideAssociate('127.0.0.2', null).allowed, false);
  });
});
