// npm install hook: builds the optional native UDP helper (native/udp-relay.c) with node-gyp.
// Where it cannot be built (no compiler, not Linux) socksgate uses its pure TypeScript relay, so a
// failure here is reported and never fails the install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (text) => process.stderr.write(`socksgate: ${text}\n`);

if (process.platform !== 'linux') {
  say('the native UDP helper is Linux only; the TypeScript relay is used');
  process.exit(0);
}
if (process.env.SOCKSGATE_NATIVE === '0') {
  say('SOCKSGATE_NATIVE=0: the native UDP helper is not built');
  process.exit(0);
}
// npm tells its scripts where its node-gyp is; otherwise the copy that ships with npm.
const gyp = [process.env.npm_config_node_gyp, join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')]
  .find((p) => p && existsSync(p));
if (!gyp) {
  say('node-gyp was not found; the native UDP helper is not built and the TypeScript relay is used');
  process.exit(process.env.SOCKSGATE_NATIVE === '1' ? 1 : 0);
}
const result = spawnSync(process.execPath, [gyp, 'rebuild', '--loglevel=warn'], { cwd: join(root, 'native'), stdio: ['ignore', 'ignore', 'inherit'] });
if (result.status === 0) say('built the native UDP helper (native/build/Release/socksgate_native.node)');
else if (process.env.SOCKSGATE_NATIVE === '1') {
  say(`SOCKSGATE_NATIVE=1 but the native UDP helper did not build (node-gyp exit ${result.status ?? result.signal}); it needs python3, make and a C compiler`);
  process.exit(1);
} else say(`the native UDP helper did not build (node-gyp exit ${result.status ?? result.signal}); the TypeScript relay is used`);
