// Recovery against a real Herald: the server drops the client's connection
// while messages keep being published, and the client comes back with every
// message once, in order.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually, sleep } from "./herald.js";

const { herald, clients } = heraldForFile();

function client(user, extra) {
  const c = new HeraldClient(herald.wsUrl, {
    WebSocket,
    getToken: () => herald.token(user),
    // Away for 300 ms (no jitter here: these tests are about what happens
    // meanwhile), long enough for publishes to land while it is.
    reconnect: { baseMs: 400, maxMs: 400, random: () => 0.75 },
    ...extra,
  });
  clients.push(c);
  return c;
}

function record(room) {
  const log = { messages: [], gaps: [], resets: [], joined: [] };
  room.on("message", (f, meta) => log.messages.push({ seq: f.seq, data: f.data, replayed: meta.replayed }));
  room.on("gap", (g) => log.gaps.push(g));
  room.on("reset", (r) => log.resets.push(r));
  room.on("joined", (f) => log.joined.push(f));
  return log;
}

test("a connection crashed by the server (1011) rejoins with since and misses nothing", { timeout: 20000 }, async () => {
  const alice = client("alice");
  const bob = client("bob");
  await Promise.all([alice.connect(), bob.connect()]);
  const room = alice.room("chat:recovery");
  const log = record(room);
  await room.join();
  const bobRoom = bob.room("chat:recovery");
  await bobRoom.join();
  const disconnects = [];
  alice.on("disconnected", (d) => disconnects.push(d));

  // Others publish all along: the server API and bob, in turns.
  const total = 60;
  const sent = [];
  const publisher = (async () => {
    for (let i = 1; i <= total; i++) {
      if (i % 2) sent.push((await herald.publish("chat:recovery", { n: i })).seq);
      else sent.push(await bobRoom.publish({ n: i }));
      await sleep(10);
    }
  })();

  await eventually(() => log.messages.length >= 15, 5000, "the first messages");
  const firstConn = alice.conn;
  await herald.crashConnection(firstConn); // answers once the connection is gone
  await publisher;
  await eventually(() => room.seq === total, 10000, `every message (seq ${room.seq} of ${total})`);

  assert.deepEqual(disconnects.map((d) => d.code), [1011]);
  assert.notEqual(alice.conn, firstConn, "a new connection");
  assert.deepEqual(sent, Array.from({ length: total }, (_, i) => i + 1));
  assert.deepEqual(log.messages.map((m) => m.seq), sent, "every seq once, in order");
  assert.deepEqual(log.messages.map((m) => m.data.n), sent);
  assert.deepEqual(log.gaps, []);
  assert.deepEqual(log.resets, []);
  assert.equal(log.joined.length, 2);
  assert.equal(log.joined[1].recovered, true);
  assert.ok(log.messages.some((m) => m.replayed), "some messages came from the replay");
  assert.ok(room.joined);
  assert.deepEqual([...room.users].sort(), ["alice", "bob"]);
});

test("a publish made while disconnected waits, and reaches the room once it is rejoined", { timeout: 15000 }, async () => {
  const carol = client("carol");
  await carol.connect();
  const room = carol.room("chat:waiting");
  const log = record(room);
  await room.join();
  // Published as the connection is lost: queued, then sent after the rejoin
  // on the next connection (so not NOT_IN_ROOM).
  const published = new Promise((resolve) => {
    carol.once("disconnected", () => resolve(room.publish({ text: "sent from a tunnel" })));
  });
  await herald.crashConnection(carol.conn);
  assert.equal(await published, 1);
  await eventually(() => log.messages.length === 1, 3000, "the echo");
  assert.deepEqual(log.messages[0].data, { text: "sent from a tunnel" });
});
