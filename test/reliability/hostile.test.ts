// Hostile clients against `socksgate serve` in each process mode: one process, workers sharing the
// listener, and workers fed round robin by the primary (NODE_CLUSTER_SCHED_POLICY). Random bytes,
// truncated and byte-by-byte handshakes, an RST at every step, refused requests closed during the
// reply's linger (half of them with an RST), tunnels reset mid-flight, and floods of garbage at UDP
// relays. Afterwards no process or worker has died and a normal client is served. In the native pass
// this is the helper under attack (and under AddressSanitizer in the sanitizer pass).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { listenPorts, startCli, type RunningCli } from '../helpers/cli.js';
import { Peer } from '../helpers/peer.js';
import { freeTcpUdpPort, startEcho } from '../helpers/servers.js';
import { greeting, handshake, readReply, request, userPass } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, UdpPeer, unwrap } from '../helpers/udp.js';

// Connections per mode, in waves of this many at once: bounded in count, and each waits at most a
// second for the server.
const ATTACKS = 960;
const WAVE = 32;
// A third of them are refused requests closed during the linger (kind 3), the round-robin crash of old.
const kindOf = (i: number): number => (i % 12 < 4 ? 3 : (i % 12) - 4 + (i % 12 >= 7 ? 1 : 0));

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Connects, or resolves null when the server refused or reset at once. */
function open(port: number): Promise<Socket | null> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => resolve(null));
    socket.once('connect', () => resolve(socket));
  });
}

/** Waits until `count` bytes came, the server closed, or `ms` passed; the bytes read. */
function readSome(socket: Socket, count: number, ms = 1000): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const done = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', done);
      socket.off('end', done);
      resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= count) done();
    };
    const timer = setTimeout(done, ms);
    socket.on('data', onData);
    socket.once('close', done);
    socket.once('end', done);
  });
}

// An RST, or a plain close. Not an RST once the socket's end has begun (the server's FIN makes Node end it):
// libuv refuses a reset during a shutdown, and Node then leaves the handle open for good (a process that never exits).
function hangUp(socket: Socket, reset: boolean): void {
  if (reset && !socket.destroyed && !socket.writableEnded) socket.resetAndDestroy();
  else socket.destroy();
}

/** One hostile connection of kind `kind`; `refused` is a destination the rules deny, `echo` one they allow. */
async function attack(port: number, kind: number, i: number, refused: number, echo: number): Promise<void> {
  const socket = await open(port);
  if (socket === null) return;
  socket.on('error', () => undefined);
  const reset = i % 2 === 0;
  switch (kind) {
    case 0: // random bytes
      socket.write(randomBytes(1 + (i % 300)));
      await readSome(socket, 1, 20);
      break;
    case 1: // a greeting cut short
      socket.write(greeting(0, 2).subarray(0, 1 + (i % 3)));
      break;
    case 2: // byte by byte up to a refused request, then gone before or after its reply
      for (const byte of Buffer.concat([greeting(0), request(1, '127.0.0.1', refused)])) {
        socket.write(Buffer.from([byte]));
        await new Promise((resolve) => setImmediate(resolve));
      }
      if (i % 4 < 2) await readSome(socket, 12, 1000);
      break;
    case 3: // a refused CONNECT in one write, closed while the server lingers after the reply
      socket.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', refused)]));
      await readSome(socket, 12, 1000);
      break;
    case 4: // gone right after the method reply
      socket.write(greeting(0));
      await readSome(socket, 2, 1000);
      break;
    case 5: // a tunnel reset in mid-flight
      socket.write(Buffer.concat([greeting(0), request(1, '127.0.0.1', echo), randomBytes(2000)]));
      await readSome(socket, 12 + (i % 7) * 100, 1000);
      break;
    case 6: // malformed requests: bad version, command and address type, random tails
      socket.write(Buffer.concat([greeting(0), Buffer.from([5 - (i % 2), 1 + (i % 9), 0, [1, 3, 4, 7][i % 4]!]), randomBytes(i % 40)]));
      await readSome(socket, 12, 300);
      break;
    default: // a login nobody asked for, and noise after it
      socket.write(Buffer.concat([greeting(2), userPass('nobody', 'x'.repeat(i % 255)), randomBytes(i % 64)]));
      await readSome(socket, 4, 300);
      break;
  }
  hangUp(socket, reset);
}

/** A normal client: CONNECT with an echo, and a UDP round trip. */
async function served(port: number, echo: number, udpEcho: number): Promise<void> {
  const peer = await Peer.connect(port);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', echo));
  assert.equal((await readReply(peer)).code, 0, 'a normal CONNECT is answered with success');
  peer.write('still served');
  assert.equal((await peer.read(12)).toString(), 'still served');
  peer.destroy();
  const association = await openAssociation(port);
  assert.equal(association.reply.code, 0, 'UDP ASSOCIATE succeeds');
  await association.sendTo('127.0.0.1', udpEcho, Buffer.from('udp still served'));
  assert.equal(unwrap((await association.udp.receive(3000)).data).data.toString(), 'udp still served');
  association.close();
}

const MODES = [
  { name: 'one process', workers: 1, policy: undefined },
  { name: 'workers sharing the listener', workers: 2, policy: 'none' },
  { name: 'workers fed round robin', workers: 2, policy: 'rr' },
] as const;

describe('hostile clients in every process mode', () => {
  const cleanups: Array<() => Promise<unknown> | void> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  for (const mode of MODES) {
    test(`${mode.name}: nothing dies, and a normal client is served afterwards`, async () => {
      const echo = await startEcho();
      const udpEcho = await startUdpEcho();
      cleanups.push(() => echo.close(), () => udpEcho.close());
      const refused = await freeTcpUdpPort();
      const adminPort = await freeTcpUdpPort();
      // Loopback destinations stay denied (the safe default) but for the two echoes.
      const rules = JSON.stringify([{ action: 'allow', destinations: ['127.0.0.1/32'], ports: [echo.port, udpEcho.port] }]);
      const saved = process.env.NODE_CLUSTER_SCHED_POLICY;
      if (mode.policy === undefined) delete process.env.NODE_CLUSTER_SCHED_POLICY;
      else process.env.NODE_CLUSTER_SCHED_POLICY = mode.policy;
      let cli: RunningCli;
      try {
        cli = startCli(['serve', '--listen', '127.0.0.1:0', '--workers', String(mode.workers), '--admin', `127.0.0.1:${adminPort}`, '--log-format', 'json', '--rules', rules]);
      } finally {
        if (saved === undefined) delete process.env.NODE_CLUSTER_SCHED_POLICY;
        else process.env.NODE_CLUSTER_SCHED_POLICY = saved;
      }
      cleanups.push(() => (cli.child.exitCode === null ? cli.stop() : undefined));
      const line = await cli.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('listening on 127.0.0.1'), 20000);
      assert.equal(line.workers, mode.workers);
      const port = listenPorts(line).get('127.0.0.1')!;

      for (let i = 0; i < ATTACKS; i += WAVE) {
        await Promise.all(Array.from({ length: WAVE }, (_, k) => attack(port, kindOf(i + k), i + k, refused, echo.port)));
      }
      // Garbage at a live association's relay port, from its client and from strangers.
      const victim = await openAssociation(port);
      assert.equal(victim.reply.code, 0);
      const strangers = await Promise.all([UdpPeer.bind('127.0.0.1'), UdpPeer.bind('127.0.0.1')]);
      for (let n = 0; n < 300; n++) {
        const from = n % 3 === 0 ? victim.udp : strangers[n % 2]!;
        await from.send(randomBytes(n % 1500), victim.reply.port, victim.reply.host);
      }
      await victim.sendTo('127.0.0.1', udpEcho.port, Buffer.from('after the garbage'));
      assert.equal(unwrap((await victim.udp.receive(3000)).data).data.toString(), 'after the garbage', 'the association outlives the garbage');
      victim.close();
      for (const s of strangers) s.close();
      // Lingering refusals end within a second; then a normal client is served.
      await sleep(1200);
      await served(port, echo.port, udpEcho.port);

      assert.equal(cli.child.exitCode, null, `the server is running (stderr: ${cli.stderr})`);
      const died = cli.lines.filter((l) => typeof l.msg === 'string' && /exited|uncaught|crash/i.test(l.msg));
      assert.deepEqual(died, [], 'no worker exited and nothing went uncaught');
      if (mode.workers > 1) {
        const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
        const restarts = metrics.split('\n').find((l) => l.startsWith('socksgate_worker_restarts_total '));
        assert.equal(restarts, 'socksgate_worker_restarts_total 0', 'no worker was restarted');
      }
      assert.equal(await cli.stop(), 0, `a clean exit after the attack (stderr: ${cli.stderr})`);
    });
  }
});
