// Socket.IO connection-state recovery (4.6+): the server's CONNECT reply
// carries a `pid`, every `message` event an offset; a client whose
// transport drops comes back with both and, when the session is still
// known, is `recovered`: still in its rooms, and every message it missed
// arrives once, in `seq` order, before live ones. A `pid` the server does
// not know (it restarted) is not recovered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Clients, Herald, ack, connected, dropHeld, heraldForFile, seqs, uniqueRoom, waitEvent, waitEvents } from "./herald.js";

const { herald, clients } = heraldForFile();

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const roomMessages = (socket, room) => socket.inbox.filter((e) => e.event === "message" && e.args[0].room === room).map((e) => e.args[0]);

for (const transport of ["websocket", "polling"]) {
  test(`${transport}: missed messages come back once and in order, then live ones, without joining again`, async () => {
    const room = uniqueRoom();
    const bob = await clients.native(herald, "bob");
    await bob.request({ type: "join", room });
    const socket = await clients.sioAs(herald, "alice", { transports: [transport] });
    assert.equal(typeof socket._pid, "string", "the CONNECT reply carries a pid (connection state recovery)");
    await ack(socket, "join", { room });

    await bob.request({ type: "publish", room, data: "m1" });
    await bob.request({ type: "publish", room, data: "m2" });
    const first = await waitEvents(socket, "message", 2, (m) => m.room === room);
    assert.deepEqual(seqs(first), [1, 2]);
    const offsets = socket.inbox.filter((e) => e.event === "message").map((e) => e.args[1]);
    assert.ok(offsets.every((o) => typeof o === "string"), `each message event carries an offset: ${offsets}`);

    const resume = await dropHeld(socket);
    for (const data of ["m3", "m4", "m5"]) {
      assert.equal((await bob.request({ type: "publish", room, data })).type, "ack");
    }
    // Emitted while disconnected: the client buffers it and sends it once back.
    const queued = ack(socket, "publish", { room, data: "queued" });
    await resume();
    assert.equal(socket.recovered, true, "the session was recovered");

    assert.equal((await queued).seq, 6);
    await bob.request({ type: "publish", room, data: "live" });
    await waitEvent(socket, "message", (m) => m.room === room && m.seq === 7);
    // One more round trip, so a late duplicate would have arrived.
    assert.equal((await ack(socket, "ping", {})).type, "pong");

    const got = roomMessages(socket, room);
    assert.deepEqual(seqs(got), range(1, 7));
    assert.deepEqual(got.map((m) => m.data), ["m1", "m2", "m3", "m4", "m5", "queued", "live"]);
    // The very frames first delivered to everyone else.
    const bobs = bob.frames("message", (f) => f.room === room);
    assert.deepEqual(got, bobs);
    // Still a member: presence has both, and publishing needs no new join.
    assert.deepEqual([...(await herald.presence(room)).users].sort(), ["alice", "bob"]);
    assert.equal((await ack(socket, "publish", { room, data: "after" })).seq, 8);
  });
}

test("the client's own reconnection after engine.close() recovers what was published while it was down", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"], reconnectionDelay: 300, reconnectionDelayMax: 300 });
  await ack(socket, "join", { room });
  await herald.publish(room, "before");
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === 1);

  const disconnected = new Promise((r) => socket.once("disconnect", r));
  const reconnected = new Promise((r) => socket.io.once("reconnect", r));
  socket.io.engine.close();
  await disconnected;
  // Published now, while the client waits to reconnect (or just after: then
  // they arrive live; either way each once and in order).
  for (let i = 2; i <= 4; i++) assert.equal(await herald.publish(room, `missed ${i}`), i);
  await reconnected;
  await connected(socket);
  assert.equal(socket.recovered, true);

  assert.equal(await herald.publish(room, "live"), 5);
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === 5);
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  assert.deepEqual(seqs(roomMessages(socket, room)), range(1, 5));
});

test("recovery without any message received before the drop", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"] });
  assert.equal((await ack(socket, "join", { room })).seq, 0);

  const resume = await dropHeld(socket);
  for (let i = 1; i <= 3; i++) assert.equal(await herald.publish(room, `missed ${i}`), i);
  await resume();
  assert.equal(socket.recovered, true);

  await waitEvents(socket, "message", 3, (m) => m.room === room);
  assert.equal(await herald.publish(room, "live"), 4);
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === 4);
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  const got = roomMessages(socket, room);
  assert.deepEqual(seqs(got), range(1, 4));
  assert.deepEqual(got.map((m) => m.data), ["missed 1", "missed 2", "missed 3", "live"]);
});

test("recovery covers every room, whichever room the last message came from", async () => {
  const quiet = uniqueRoom("quiet");
  const busy = uniqueRoom("busy");
  const never = uniqueRoom("never");
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"] });
  for (const room of [quiet, busy, never]) await ack(socket, "join", { room });

  await herald.publish(quiet, "q1");
  for (let i = 1; i <= 3; i++) await herald.publish(busy, `b${i}`);
  await waitEvent(socket, "message", (m) => m.room === busy && m.seq === 3);
  await waitEvent(socket, "message", (m) => m.room === quiet && m.seq === 1);

  const resume = await dropHeld(socket);
  await herald.publish(quiet, "q2");
  await herald.publish(busy, "b4");
  await herald.publish(never, "n1");
  await herald.publish(quiet, "q3");
  await resume();
  assert.equal(socket.recovered, true);

  await herald.publish(quiet, "q4");
  await herald.publish(busy, "b5");
  await herald.publish(never, "n2");
  await waitEvent(socket, "message", (m) => m.room === quiet && m.seq === 4);
  await waitEvent(socket, "message", (m) => m.room === busy && m.seq === 5);
  await waitEvent(socket, "message", (m) => m.room === never && m.seq === 2);
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  assert.deepEqual(seqs(roomMessages(socket, quiet)), range(1, 4));
  assert.deepEqual(seqs(roomMessages(socket, busy)), range(1, 5));
  assert.deepEqual(seqs(roomMessages(socket, never)), range(1, 2));
});

test("a room left before the drop stays left after recovery", async () => {
  const kept = uniqueRoom("kept");
  const left = uniqueRoom("left");
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"] });
  await ack(socket, "join", { room: kept });
  await ack(socket, "join", { room: left });
  await herald.publish(left, "l1");
  await waitEvent(socket, "message", (m) => m.room === left);
  await ack(socket, "leave", { room: left });

  const resume = await dropHeld(socket);
  await herald.publish(left, "l2");
  await herald.publish(kept, "k1");
  await resume();
  assert.equal(socket.recovered, true);
  await waitEvent(socket, "message", (m) => m.room === kept && m.seq === 1);
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  assert.deepEqual((await herald.presence(left)).users, [], "not back in the room it left");
  assert.deepEqual(seqs(roomMessages(socket, left)), [1], "nothing of the room it left");
  const refused = await ack(socket, "publish", { room: left, data: "x" });
  assert.equal(refused.code, "NOT_IN_ROOM");
});

test("a pid the server does not know (it restarted) is not recovered", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"] });
  await ack(socket, "join", { room });
  await herald.publish(room, "before");
  await waitEvent(socket, "message", (m) => m.room === room);
  const oldPid = socket._pid;
  assert.equal(typeof oldPid, "string");

  const disconnected = new Promise((r) => socket.once("disconnect", r));
  await herald.stop({ kill: true });
  await disconnected;
  const back = new Promise((r) => socket.once("connect", r));
  await herald.start();
  await back;
  assert.equal(socket.recovered, false);
  assert.equal(typeof socket._pid, "string", "a new session, with a pid of its own");
  assert.notEqual(socket._pid, oldPid);

  // Not recovered: a fresh session, in no room. The client joins again, and works.
  const refused = await ack(socket, "publish", { room, data: "x" });
  assert.equal(refused.code, "NOT_IN_ROOM");
  const joined = await ack(socket, "join", { room });
  assert.equal(joined.type, "joined");
  const seq = (await ack(socket, "publish", { room, data: "after restart" })).seq;
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === seq && m.data === "after restart");
});

test("missed messages that history no longer holds: not recovered", async () => {
  const short = new Herald({ config: { history: { size: 3 } } });
  const own = new Clients();
  await short.start();
  try {
    const room = uniqueRoom();
    const socket = await own.sioAs(short, "alice", { transports: ["websocket"] });
    await ack(socket, "join", { room });
    await short.publish(room, "seen");
    await waitEvent(socket, "message", (m) => m.room === room);

    const resume = await dropHeld(socket);
    for (let i = 2; i <= 6; i++) await short.publish(room, `missed ${i}`);
    await resume();
    assert.equal(socket.recovered, false, "seq 2 and 3 are gone from a history of 3");
    // Nothing replayed with gaps: whatever came is not a partial replay.
    assert.equal((await ack(socket, "ping", {})).type, "pong");
    const got = seqs(roomMessages(socket, room));
    assert.ok(!got.includes(4) && !got.includes(5) && !got.includes(6), `no partial replay: ${got}`);
  } finally {
    own.closeAll();
    await short.dispose();
  }
});
