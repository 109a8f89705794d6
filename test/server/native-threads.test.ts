// The native helper in worker threads: each thread that loads it gets its own state, and a thread
// that used the TCP and UDP sides and exits (or is terminated with connections open) takes its
// connections, sockets and libuv handles with it; the process goes on, and so does the helper in the
// main thread. In the TypeScript pass the same threads run on dgram and net.Sockets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { udpIo } from '../../src/native/addon.js';
import { Peer } from '../helpers/peer.js';
import { startEcho, startSocks } from '../helpers/servers.js';
import { handshake, readReply, request } from '../helpers/socks-bytes.js';
import { openAssociation, startUdpEcho, unwrap } from '../helpers/udp.js';

const modules = {
  servers: new URL('../helpers/servers.js', import.meta.url).href,
  peer: new URL('../helpers/peer.js', import.meta.url).href,
  bytes: new URL('../helpers/socks-bytes.js', import.meta.url).href,
  udp: new URL('../helpers/udp.js', import.meta.url).href,
  addon: new URL('../../src/native/addon.js', import.meta.url).href,
};

// Runs in the worker: a server with a CONNECT and a UDP round trip through it, then (unless it is to
// be terminated with everything open) closes all and lets the thread end by itself.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const m = workerData.modules;
  const { startEcho, startSocks } = await import(m.servers);
  const { Peer } = await import(m.peer);
  const { handshake, readReply, request } = await import(m.bytes);
  const { openAssociation, startUdpEcho, unwrap } = await import(m.udp);
  const { udpIo } = await import(m.addon);
  const echo = await startEcho();
  const udpEcho = await startUdpEcho();
  const socks = await startSocks();
  const peer = await Peer.connect(socks.port);
  await handshake(peer);
  peer.write(request(1, '127.0.0.1', echo.port));
  const reply = await readReply(peer);
  const text = 'thread ' + workerData.id;
  peer.write(text);
  const echoed = (await peer.read(text.length)).toString();
  const association = await openAssociation(socks.port);
  await association.sendTo('127.0.0.1', udpEcho.port, Buffer.from(text));
  const datagram = unwrap((await association.udp.receive(3000)).data).data.toString();
  parentPort.postMessage({ native: udpIo().native, reply: reply.code, echoed, datagram, sessions: socks.server.sessionCount });
  if (workerData.keepOpen) return; // terminated by the test with the tunnel and the association open
  peer.destroy();
  association.close();
  await socks.close();
  await echo.close();
  udpEcho.close();
})().catch((error) => parentPort.postMessage({ error: String(error && error.stack || error) }));
`;

interface Report {
  native?: boolean;
  reply?: number;
  echoed?: string;
  datagram?: string;
  sessions?: number;
  error?: string;
}

function runWorker(id: number, keepOpen: boolean): { report: Promise<Report>; worker: Worker; exited: Promise<number> } {
  const worker = new Worker(WORKER, { eval: true, workerData: { id, keepOpen, modules } });
  const report = new Promise<Report>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { report, worker, exited };
}

async function roundTrips(): Promise<void> {
  const echo = await startEcho();
  const udpEcho = await startUdpEcho();
  const socks = await startSocks();
  try {
    const peer = await Peer.connect(socks.port);
    await handshake(peer);
    peer.write(request(1, '127.0.0.1', echo.port));
    assert.equal((await readReply(peer)).code, 0);
    peer.write('main thread');
    assert.equal((await peer.read(11)).toString(), 'main thread');
    peer.destroy();
    const association = await openAssociation(socks.port);
    await association.sendTo('127.0.0.1', udpEcho.port, Buffer.from('main datagram'));
    assert.equal(unwrap((await association.udp.receive(3000)).data).data.toString(), 'main datagram');
    association.close();
  } finally {
    await socks.close();
    await echo.close();
    udpEcho.close();
  }
}

test('worker threads that use the helper and exit, or are terminated mid-session, leave the process and the main thread working', async () => {
  // The main thread loads it first, so the threads' instances come second and third.
  await roundTrips();
  for (let round = 0; round < 3; round++) {
    const runs = [runWorker(round * 10 + 1, false), runWorker(round * 10 + 2, false), runWorker(round * 10 + 3, true)];
    for (const [i, run] of runs.entries()) {
      const report = await run.report;
      assert.equal(report.error, undefined, report.error);
      assert.equal(report.native, udpIo().native, 'each thread uses the helper where the main thread does');
      assert.equal(report.reply, 0);
      assert.equal(report.echoed, `thread ${round * 10 + i + 1}`);
      assert.equal(report.datagram, `thread ${round * 10 + i + 1}`);
      assert.equal(report.sessions, 2, 'the CONNECT and the association are live in that thread');
    }
    // The third is stopped with its tunnel and association open: its environment's teardown closes them.
    await runs[2]!.worker.terminate();
    assert.equal(await runs[0]!.exited, 0, 'a thread that closed everything ends by itself');
    assert.equal(await runs[1]!.exited, 0);
    assert.equal(await runs[2]!.exited, 1, 'terminate() ends a thread with code 1');
  }
  // The helper in the main thread is untouched by the threads' teardowns.
  await roundTrips();
});
