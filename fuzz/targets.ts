import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { parseAddress, writeAddress, addressSize } from 'socksgate-client/protocol';
import { parseCredentials, encodeCredentials } from 'socksgate-client/protocol';
import { parseGreeting } from 'socksgate-client/protocol';
import { ByteReader } from 'socksgate-client/protocol';
import { encodeReply, encodeRequest, parseReply, parseRequest } from 'socksgate-client/protocol';
import { encodeUdpDatagram, parseUdpHeader } from 'socksgate-client/protocol';
import { SocksError } from 'socksgate-client/protocol';
import { encodeUotFrame, parseUotFrame } from 'socksgate-client/protocol';
import { ConfigError } from '../src/config/errors.js';
import { parseConfigText, validateConfig } from '../src/config/load.js';
import { UserStore } from '../src/server/users.js';
import type { FuzzTarget } from './engine.js';

// Every parser that reads untrusted bytes, with the properties it must keep on any input: it never
// throws (errors are values), what it accepts re-encodes to the bytes it read, and sizes stay in bounds.

// The codec as loaded: the client package's build (node_modules/socksgate-client links there).
const PROTOCOL = ['/packages/client/dist/protocol/'];

function expectError(result: { status: string; error?: unknown }): void {
  if (result.status === 'error') assert.ok((result as { error: unknown }).error instanceof SocksError, 'errors are SocksErrors');
}

export const TARGETS: FuzzTarget[] = [
  {
    name: 'greeting',
    cover: PROTOCOL,
    run(input) {
      const result = parseGreeting(input);
      expectError(result);
      if (result.status === 'ok') {
        assert.equal(result.size, 2 + result.value.methods.length);
        assert.ok(input.subarray(0, result.size).equals(Buffer.from([5, result.value.methods.length, ...result.value.methods])));
      }
    },
  },
  {
    name: 'auth',
    cover: PROTOCOL,
    run(input) {
      const result = parseCredentials(input);
      expectError(result);
      if (result.status === 'ok') {
        assert.ok(result.size <= input.length);
        const { username, password } = result.value;
        const user = Buffer.from(username, 'utf8');
        // Re-encoding is exact when the name was valid UTF-8 and both fields are non-empty.
        if (user.equals(input.subarray(2, 2 + input[1]!)) && user.length > 0 && password.length > 0) {
          assert.ok(encodeCredentials(username, password).equals(input.subarray(0, result.size)));
        }
      }
    },
  },
  {
    name: 'request',
    cover: PROTOCOL,
    run(input) {
      for (const parse of [parseRequest, parseReply]) {
        const result = parse(input);
        expectError(result);
        if (result.status !== 'ok') continue;
        assert.ok(result.size <= input.length);
        const value: unknown = result.value;
        const bytes = 'command' in result.value ? encodeRequest(result.value.command, result.value.destination) : encodeReply(result.value.reply as 0, result.value.bound);
        // RSV (byte 2) is ignored on input; everything else must round-trip.
        const expected = Buffer.from(input.subarray(0, result.size));
        expected[2] = 0;
        assert.ok(bytes.equals(expected), `re-encoded ${bytes.toString('hex')} != ${expected.toString('hex')} (${JSON.stringify(value)})`);
      }
    },
  },
  {
    name: 'address',
    cover: PROTOCOL,
    run(input) {
      const result = parseAddress(input, 0);
      expectError(result);
      if (result.status === 'ok') {
        const out = Buffer.alloc(addressSize(result.value));
        assert.equal(writeAddress(out, 0, result.value), result.size);
        assert.ok(out.equals(input.subarray(0, result.size)));
      }
    },
  },
  {
    name: 'udp-header',
    cover: PROTOCOL,
    run(input) {
      const result = parseUdpHeader(input);
      expectError(result);
      if (result.status === 'ok') {
        const data = input.subarray(result.size);
        const again = encodeUdpDatagram(result.value.address, data, result.value.fragment);
        const expected = Buffer.from(input);
        expected[0] = 0;
        expected[1] = 0;
        assert.ok(again.equals(expected));
      }
    },
  },
  {
    name: 'uot-frame',
    cover: PROTOCOL,
    run(input) {
      const result = parseUotFrame(input);
      expectError(result);
      if (result.status === 'ok') {
        assert.ok(result.size <= input.length);
        assert.ok(encodeUotFrame(result.value.address, result.value.payload).equals(input.subarray(0, result.size)));
      }
    },
  },
  {
    name: 'pipelined',
    cover: PROTOCOL,
    run(input) {
      // The first byte chooses where to cut; the rest is a pipelined handshake.
      const body = input.subarray(1);
      const cut = body.length ? (input[0] ?? 0) % (body.length + 1) : 0;
      const whole = new ByteReader();
      whole.push(body);
      const pieces = new ByteReader();
      pieces.push(body.subarray(0, cut));
      const a = [whole.read(parseGreeting).status];
      const first = pieces.read(parseGreeting);
      pieces.push(body.subarray(cut));
      const b = [first.status === 'more' ? pieces.read(parseGreeting).status : first.status];
      assert.deepEqual(b, a, 'a split never changes the outcome');
    },
  },
  {
    name: 'config',
    cover: ['/src/config/'],
    run(input) {
      const text = input.toString('utf8');
      try {
        validateConfig(parseConfigText(text, 'fuzz.yaml'), { file: 'fuzz.yaml' });
      } catch (error) {
        assert.ok(error instanceof ConfigError, `only ConfigError, got ${(error as Error).name}: ${(error as Error).message}`);
        assert.ok((error as Error).message.length > 0);
      }
      // Valid YAML that is a mapping is either accepted or refused with the key named.
      let data: unknown;
      try {
        data = parseYaml(text, { logLevel: 'error' });
      } catch {
        return;
      }
      if (data && typeof data === 'object' && !Array.isArray(data)) {
        try {
          validateConfig(data);
        } catch (error) {
          assert.ok(error instanceof ConfigError);
          assert.match((error as Error).message, /invalid configuration|open proxy/);
        }
      }
    },
  },
  {
    name: 'users-file',
    cover: ['/src/server/users'],
    run(input) {
      try {
        UserStore.parse(input.toString('utf8'), 'fuzz-users.txt');
      } catch (error) {
        assert.ok(error instanceof ConfigError, `only ConfigError, got ${(error as Error).name}`);
        assert.match((error as Error).message, /users file fuzz-users.txt line \d+/);
      }
    },
  },
];
