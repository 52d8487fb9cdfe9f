// Two Herald nodes sharing one real redis-server: Socket.IO clients on
// either node, and a native client, are in the same rooms, see the same
// messages with the same seq, the same presence, and reach each other's
// users directly.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { Clients, Herald, Redis, WAIT, ack, dropHeld, eventually, seqs, uniqueRoom, waitEvent, waitEvents } from "./herald.js";

const redis = new Redis();
const secret = randomBytes(16).toString("hex");
const apiKey = randomBytes(16).toString("hex");
const cluster = (nodeId) => ({
  secret,
  apiKey,
  nodeId,
  env: {
    HERALD_CLUSTER__ENABLED: "true",
    HERALD_SERVER__NODE_ID: nodeId,
  },
});
const a = new Herald(cluster("sio-a"));
const b = new Herald(cluster("sio-b"));
const clients = new Clients();

before(async () => {
  await redis.start();
  for (const node of [a, b]) {
    node.env.HERALD_CLUSTER__REDIS_URL = redis.url;
    await node.start();
  }
});

after(async () => {
  clients.closeAll();
  await Promise.all([a.dispose(), b.dispose()]);
  await redis.stop();
});

test("Socket.IO clients on two nodes and a native client share a room and its seq", async () => {
  const room = uniqueRoom();
  const alice = await clients.sioAs(a, "alice");
  const bob = await clients.sioAs(b, "bob", { transports: ["polling"] });
  const carol = await clients.native(b, "carol");

  await ack(alice, "join", { room });
  await ack(bob, "join", { room });
  await carol.request({ type: "join", room });
  await waitEvent(alice, "user_joined", (e) => e.user === "bob");
  await waitEvent(alice, "user_joined", (e) => e.user === "carol");

  const presence = await ack(bob, "presence", { room });
  assert.deepEqual([...presence.users].sort(), ["alice", "bob", "carol"]);
  assert.equal(presence.count, 3);

  const s1 = (await ack(alice, "publish", { room, data: "from a" })).seq;
  const s2 = (await ack(bob, "publish", { room, data: "from b" })).seq;
  const s3 = (await carol.request({ type: "publish", room, data: "from native" })).seq;
  const s4 = await a.publish(room, "api on a");
  const s5 = await b.publish(room, "api on b");
  const expected = [s1, s2, s3, s4, s5];
  assert.deepEqual(expected, [1, 2, 3, 4, 5]);

  const onA = await waitEvents(alice, "message", 5, (m) => m.room === room);
  const onB = await waitEvents(bob, "message", 5, (m) => m.room === room);
  const native = await carol.inbox.findAll((f) => f.type === "message" && f.room === room, 5);
  assert.deepEqual(seqs(onA), expected);
  assert.deepEqual(seqs(onB), expected);
  assert.deepEqual(seqs(native), expected);
  assert.deepEqual(onA.map((m) => m.from).slice(0, 3), ["alice", "bob", "carol"]);
  assert.deepEqual(onA, onB, "the same frames on both nodes");
  assert.deepEqual(onA, native);

  // Leaving on one node is seen on the other.
  await ack(bob, "leave", { room });
  await waitEvent(alice, "user_left", (e) => e.user === "bob");
  await carol.next((f) => f.type === "user_left" && f.user === "bob");
});

/**
 * A user's channel is subscribed in the background as the user comes
 * online, so the first direct across nodes may go before it is: repeat
 * `send` until `arrived()` finds it (each try waits briefly).
 */
async function untilCrossed(send, arrived, what) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    send();
    try {
      return await arrived(300);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} never crossed nodes: ${err.message}`);
    }
  }
}

test("direct messages and status across nodes", async () => {
  const dave = await clients.sioAs(a, "dave");
  const erin = await clients.sioAs(b, "erin");
  const frank = await clients.native(a, "frank");

  // Online status is written to the cluster in the background too.
  const expected = { erin: true, frank: true, nobody: false };
  let status;
  await eventually(
    async () => {
      status = await ack(dave, "status", { users: ["erin", "frank", "nobody"] });
      return isDeepStrictEqual(status.online, expected);
    },
    WAIT,
    "erin and frank online cluster-wide",
  ).catch((err) => {
    throw new Error(`${err.message}: last status ${JSON.stringify(status)}`);
  });
  assert.equal(status.type, "status");

  await untilCrossed(
    () => dave.emit("direct", { to: "erin", data: "warm-up" }),
    (ms) => waitEvent(erin, "direct", (d) => d.data === "warm-up", ms),
    "a direct to erin",
  );
  assert.equal((await ack(dave, "direct", { to: "erin", data: "a to b" })).type, "ack");
  const got = await waitEvent(erin, "direct", (d) => d.data === "a to b");
  assert.equal(got.type, "direct");
  assert.equal(got.from, "dave");
  assert.equal(typeof got.ts, "number");

  await untilCrossed(
    () => erin.emit("direct", { to: "frank", data: "warm-up" }),
    (ms) => frank.inbox.find((f) => f.type === "direct" && f.data === "warm-up", ms),
    "a direct to frank",
  );
  erin.emit("direct", { to: "frank", data: "b to native on a" });
  const native = await frank.next((f) => f.type === "direct" && f.data === "b to native on a");
  assert.equal(native.from, "erin");

  frank.send({ type: "direct", to: "erin", data: "native on a to b" });
  const back = await waitEvent(erin, "direct", (d) => d.from === "frank");
  assert.equal(back.data, "native on a to b");

  await a.api("POST", "/api/broadcast", { data: "all nodes" });
  await waitEvent(erin, "broadcast", (m) => m.data === "all nodes");
  await waitEvent(dave, "broadcast", (m) => m.data === "all nodes");
});

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const roomMessages = (socket, room) => socket.inbox.filter((e) => e.event === "message" && e.args[0].room === room).map((e) => e.args[0]);

test("a client that comes back on the other node recovers from the cluster's history", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(a, "gina", { transports: ["websocket"] });
  await ack(socket, "join", { room });
  await a.publish(room, "m1");
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === 1);

  const resume = await dropHeld(socket);
  await a.publish(room, "m2");
  await b.publish(room, "m3");
  // Node a is where it was; a load balancer sends it to b.
  await resume(b.url);
  assert.equal(socket.recovered, true);

  await a.publish(room, "live");
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === 4);
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  assert.deepEqual(seqs(roomMessages(socket, room)), range(1, 4));
  assert.deepEqual(roomMessages(socket, room).map((m) => m.data), ["m1", "m2", "m3", "live"]);
  const presence = await b.presence(room);
  assert.deepEqual(presence.users, ["gina"]);
});

test("recovered on the other node means every room is back, also one joined after the last message received", async () => {
  const early = uniqueRoom("early");
  const late = uniqueRoom("late");
  const socket = await clients.sioAs(a, "hank", { transports: ["websocket"] });
  await ack(socket, "join", { room: early });
  await a.publish(early, "e1");
  await waitEvent(socket, "message", (m) => m.room === early);
  // Joined after the last message the client got: no offset names it.
  await ack(socket, "join", { room: late });

  const resume = await dropHeld(socket);
  await a.publish(early, "e2");
  await a.publish(late, "l1");
  await resume(b.url);

  if (socket.recovered) {
    // Then both rooms are back, with what was missed in each.
    await a.publish(late, "l2");
    await waitEvents(socket, "message", 2, (m) => m.room === late).catch((err) => {
      throw new Error(`recovered, but the room joined last is gone: ${err.message}`);
    });
    assert.deepEqual(seqs(roomMessages(socket, late)), [1, 2]);
    assert.deepEqual(seqs(roomMessages(socket, early)), [1, 2]);
  } else {
    // Not recovered: the client knows to join again, and can.
    assert.equal((await ack(socket, "join", { room: late })).type, "joined");
  }
});
