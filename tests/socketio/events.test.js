// Socket.IO events against native frames: what the official client emits
// (`join`, `publish`, ...) with an acknowledgement gets the native success
// reply or `error` frame; without one, only errors come back, as `error`
// events; and Socket.IO clients share rooms, `seq`, presence, direct
// messages and typing with native WebSocket clients.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Herald,
  Clients,
  ack,
  events,
  heraldForFile,
  uniqueRoom,
  waitEvent,
  waitEvents,
  seqs,
} from "./herald.js";

const { herald, clients } = heraldForFile();

/** A user name no other test uses, so direct messages reach only this test's connections. */
let users = 0;
const user = (name) => `${name}${++users}`;

for (const transport of ["websocket", "polling"]) {
  const opts = { transports: [transport] };

  test(`${transport}: join, publish, leave answer with the native replies`, async () => {
    const room = uniqueRoom();
    const alice = user("alice");
    const socket = await clients.sioAs(herald, alice, opts);

    const joined = await ack(socket, "join", { room });
    assert.equal(joined.type, "joined");
    assert.equal(joined.room, room);
    assert.deepEqual(joined.users, [alice]);
    assert.equal(joined.count, 1);
    assert.equal(joined.seq, 0);
    assert.equal(typeof joined.epoch, "string");
    assert.ok(joined.epoch.length > 0);
    assert.equal("recovered" in joined, false, "a join without since has no recovered field");

    const published = await ack(socket, "publish", { room, data: { x: 1 } });
    assert.equal(published.type, "ack");
    assert.equal(published.seq, 1);

    const message = await waitEvent(socket, "message", (m) => m.room === room);
    assert.equal(message.type, "message");
    assert.equal(message.from, alice);
    assert.deepEqual(message.data, { x: 1 });
    assert.equal(message.seq, 1);
    assert.equal(typeof message.ts, "number");

    // echo:false: the publisher does not get its own message.
    const quiet = await ack(socket, "publish", { room, data: "quiet", echo: false });
    assert.equal(quiet.seq, 2);
    const third = await ack(socket, "publish", { room, data: "loud" });
    assert.equal(third.seq, 3);
    await waitEvent(socket, "message", (m) => m.room === room && m.seq === 3);
    assert.deepEqual(seqs(events(socket, "message", (m) => m.room === room)), [1, 3]);

    const left = await ack(socket, "leave", { room });
    assert.equal(left.type, "left");
    assert.equal(left.room, room);

    const refused = await ack(socket, "publish", { room, data: 1 });
    assert.equal(refused.type, "error");
    assert.equal(refused.code, "NOT_IN_ROOM");
    assert.equal(typeof refused.message, "string");
  });

  test(`${transport}: errors in acks carry the native codes`, async () => {
    const socket = await clients.sioAs(herald, user("alice"), opts);
    const room = uniqueRoom();

    const badRoom = await ack(socket, "join", { room: "no spaces allowed" });
    assert.equal(badRoom.type, "error");
    assert.equal(badRoom.code, "BAD_REQUEST");

    const missing = await ack(socket, "join", {});
    assert.equal(missing.code, "BAD_REQUEST");

    // Field checks come before membership checks.
    const badPublish = await ack(socket, "publish", { room: "bad room", data: 1 });
    assert.equal(badPublish.code, "BAD_REQUEST");

    const noData = await ack(socket, "publish", { room });
    assert.equal(noData.code, "BAD_REQUEST");

    const typing = await ack(socket, "typing", { room, typing: true });
    assert.equal(typing.code, "NOT_IN_ROOM");

    const forbidden = await ack(socket, "join", { room: "user:somebody-else" });
    assert.equal(forbidden.code, "FORBIDDEN");

    // The argument must be an object with the native frame's fields.
    const notObject = await ack(socket, "join", "lobby");
    assert.equal(notObject.type, "error");
    assert.equal(notObject.code, "BAD_REQUEST");

    // An event that is no frame type: an error, as an unknown native type is.
    const unknown = await ack(socket, "nonsense", {});
    assert.equal(unknown.type, "error");
    assert.ok(["UNKNOWN_TYPE", "BAD_REQUEST"].includes(unknown.code), unknown.code);

    // `data: null` is allowed.
    await ack(socket, "join", { room });
    const nullData = await ack(socket, "publish", { room, data: null });
    assert.equal(nullData.type, "ack");

    const pong = await ack(socket, "ping", {});
    assert.equal(pong.type, "pong");
    assert.ok(socket.connected);
  });

  test(`${transport}: without an ack, successes are silent and errors come as error events`, async () => {
    const room = uniqueRoom();
    const other = uniqueRoom();
    const socket = await clients.sioAs(herald, user("alice"), opts);

    socket.emit("join", { room });
    socket.emit("publish", { room, data: "hello" });
    socket.emit("publish", { room: other, data: "not joined" });

    const error = await waitEvent(socket, "error");
    assert.equal(error.type, "error");
    assert.equal(error.code, "NOT_IN_ROOM");
    assert.equal(typeof error.message, "string");

    const message = await waitEvent(socket, "message", (m) => m.room === room);
    assert.equal(message.data, "hello");

    // The server answers in order: once this ack is back, a success reply
    // to the frames above would have come before it.
    assert.equal((await ack(socket, "ping", {})).type, "pong");
    const names = [...new Set(socket.inbox.items.map((e) => e.event))].sort();
    assert.deepEqual(names, ["error", "message"], "no event but the message and the one error");
    assert.equal(events(socket, "error").length, 1);
  });

  test(`${transport}: binary arguments are refused with BAD_REQUEST and the connection stays usable`, async () => {
    const room = uniqueRoom();
    const socket = await clients.sioAs(herald, user("alice"), opts);
    await ack(socket, "join", { room });

    const withAck = await ack(socket, "publish", { room, data: Buffer.from([1, 2, 3]) });
    assert.equal(withAck.type, "error");
    assert.equal(withAck.code, "BAD_REQUEST");
    assert.match(withAck.message, /binary/i);

    socket.emit("publish", { room, data: new Uint8Array([4, 5]).buffer });
    const error = await waitEvent(socket, "error");
    assert.equal(error.code, "BAD_REQUEST");
    assert.match(error.message, /binary/i);

    // Nothing was published; the socket still works.
    assert.ok(socket.connected);
    const published = await ack(socket, "publish", { room, data: "text" });
    assert.equal(published.type, "ack");
    assert.equal(published.seq, 1, "the refused binary publishes took no seq");
    await waitEvent(socket, "message", (m) => m.room === room && m.seq === 1);
  });
}

test("a Socket.IO client and a native client in one room see each other's messages with the same seq", async () => {
  const room = uniqueRoom();
  const alice = user("alice");
  const bob = user("bob");
  const native = await clients.native(herald, bob);
  const socket = await clients.sioAs(herald, alice);

  assert.equal((await native.request({ type: "join", room })).type, "joined");
  const joined = await ack(socket, "join", { room });
  assert.deepEqual([...joined.users].sort(), [alice, bob].sort());
  assert.equal(joined.count, 2);

  const first = await ack(socket, "publish", { room, data: "from socket.io" });
  const second = await native.request({ type: "publish", room, data: "from ws" });
  assert.equal(second.type, "ack");
  const third = await herald.publish(room, "from the api");
  const expected = [first.seq, second.seq, third];
  assert.deepEqual(expected, [1, 2, 3]);

  const viaSio = await waitEvents(socket, "message", 3, (m) => m.room === room);
  const viaWs = await native.inbox.findAll((f) => f.type === "message" && f.room === room, 3);
  assert.deepEqual(seqs(viaSio), expected);
  assert.deepEqual(seqs(viaWs), expected);
  assert.deepEqual(
    viaSio.map((m) => [m.from, m.data]),
    [
      [alice, "from socket.io"],
      [bob, "from ws"],
      [viaWs[2].from, "from the api"],
    ],
  );
  // The very same frames on both sides.
  assert.deepEqual(viaSio, viaWs);
});

test("direct messages cross between Socket.IO and native connections", async () => {
  const alice = user("alice");
  const bob = user("bob");
  const carol = user("carol");
  const socket = await clients.sioAs(herald, alice);
  const native = await clients.native(herald, bob);
  const carolSocket = await clients.sioAs(herald, carol);

  const sent = await ack(socket, "direct", { to: bob, data: { hi: "bob" } });
  assert.equal(sent.type, "ack");
  const got = await native.next((f) => f.type === "direct");
  assert.equal(got.from, alice);
  assert.deepEqual(got.data, { hi: "bob" });
  assert.equal(typeof got.ts, "number");

  native.send({ type: "direct", to: alice, data: "hi alice" });
  const back = await waitEvent(socket, "direct");
  assert.equal(back.type, "direct");
  assert.equal(back.from, bob);
  assert.equal(back.data, "hi alice");
  assert.equal(typeof back.ts, "number");

  // Socket.IO to Socket.IO, without an ack.
  socket.emit("direct", { to: carol, data: 42 });
  const toCarol = await waitEvent(carolSocket, "direct");
  assert.equal(toCarol.from, alice);
  assert.equal(toCarol.data, 42);

  // The server API reaches a Socket.IO connection too.
  await herald.api("POST", "/api/direct", { user: carol, data: "from the backend" });
  await waitEvent(carolSocket, "direct", (d) => d.data === "from the backend");
  // And broadcasts.
  await herald.api("POST", "/api/broadcast", { data: "everyone" });
  const broadcast = await waitEvent(carolSocket, "broadcast", (b) => b.data === "everyone");
  assert.equal(broadcast.type, "broadcast");
  assert.equal(typeof broadcast.ts, "number");
});

test("user_joined, typing and user_left cross between the protocols", async () => {
  const room = uniqueRoom();
  const alice = user("alice");
  const bob = user("bob");
  const carol = user("carol");
  const socket = await clients.sioAs(herald, alice);
  await ack(socket, "join", { room });

  const native = await clients.native(herald, bob);
  await native.request({ type: "join", room });
  const bobJoined = await waitEvent(socket, "user_joined", (e) => e.user === bob);
  assert.deepEqual(bobJoined, { type: "user_joined", room, user: bob });

  const carolSocket = await clients.sioAs(herald, carol);
  await ack(carolSocket, "join", { room });
  const carolJoined = await native.next((f) => f.type === "user_joined" && f.user === carol);
  assert.equal(carolJoined.room, room);
  await waitEvent(socket, "user_joined", (e) => e.user === carol);

  const typed = await ack(socket, "typing", { room, typing: true });
  assert.equal(typed.type, "ack");
  const typingFrame = await native.next((f) => f.type === "typing" && f.user === alice);
  assert.equal(typingFrame.room, room);
  assert.equal(typingFrame.typing, true);

  native.send({ type: "typing", room, typing: true });
  const typingEvent = await waitEvent(socket, "typing", (e) => e.user === bob);
  assert.deepEqual(typingEvent, { type: "typing", room, user: bob, typing: true });
  // Others get typing; the typer does not.
  await waitEvent(carolSocket, "typing", (e) => e.user === alice);
  assert.equal(events(socket, "typing", (e) => e.user === alice).length, 0);

  await native.request({ type: "leave", room });
  const bobLeft = await waitEvent(socket, "user_left", (e) => e.user === bob);
  assert.deepEqual(bobLeft, { type: "user_left", room, user: bob });

  // A Socket.IO user leaving is seen by native members.
  await native.request({ type: "join", room });
  await ack(carolSocket, "leave", { room });
  const carolLeft = await native.next((f) => f.type === "user_left" && f.user === carol);
  assert.equal(carolLeft.room, room);

  // A user with two connections (one of each kind) is one user: no second
  // user_joined, and no user_left until the last one leaves.
  const aliceNative = await clients.native(herald, alice);
  await aliceNative.request({ type: "join", room });
  await ack(socket, "leave", { room });
  assert.equal((await ack(socket, "ping", {})).type, "pong");
  await native.request({ type: "ping" });
  assert.equal(native.frames("user_joined", (f) => f.user === alice).length, 0);
  assert.equal(native.frames("user_left", (f) => f.user === alice).length, 0);
  await aliceNative.request({ type: "leave", room });
  await native.next((f) => f.type === "user_left" && f.user === alice);
});

test("a Socket.IO client that disconnects leaves its rooms", async () => {
  const room = uniqueRoom();
  const alice = user("alice");
  const bob = user("bob");
  const native = await clients.native(herald, bob);
  await native.request({ type: "join", room });
  const socket = await clients.sioAs(herald, alice);
  await ack(socket, "join", { room });
  await native.next((f) => f.type === "user_joined" && f.user === alice);

  socket.disconnect();
  await native.next((f) => f.type === "user_left" && f.user === alice);
  assert.deepEqual((await herald.presence(room)).users, [bob]);
});

test("presence and status answer in acks, cluster-wide lists of users", async () => {
  const room = uniqueRoom();
  const alice = user("alice");
  const bob = user("bob");
  const nobody = user("nobody");
  const socket = await clients.sioAs(herald, alice);
  const native = await clients.native(herald, bob);
  await native.request({ type: "join", room });

  // presence does not need membership.
  const before = await ack(socket, "presence", { room });
  assert.equal(before.type, "presence");
  assert.equal(before.room, room);
  assert.deepEqual(before.users, [bob]);

  await ack(socket, "join", { room });
  const after = await ack(socket, "presence", { room });
  assert.deepEqual([...after.users].sort(), [alice, bob].sort());
  assert.equal(after.count, 2);

  const status = await ack(socket, "status", { users: [alice, bob, nobody] });
  assert.equal(status.type, "status");
  assert.deepEqual(status.online, { [alice]: true, [bob]: true, [nobody]: false });

  // A native client sees the Socket.IO user as online.
  const fromNative = await native.request({ type: "status", users: [alice] });
  assert.deepEqual(fromNative.online, { [alice]: true });
});

test("frames over the rate limit are refused with RATE_LIMITED, in acks and as error events", async () => {
  const limited = new Herald({ config: { limits: { rate_per_sec: 1, rate_burst: 3, rate_strikes: 1000 } } });
  const own = new Clients();
  await limited.start();
  try {
    const room = uniqueRoom();
    const socket = await own.sioAs(limited, user("alice"), { transports: ["websocket"] });
    const replies = await Promise.all(Array.from({ length: 20 }, () => ack(socket, "ping", {})));
    const codes = replies.map((r) => (r.type === "error" ? r.code : r.type));
    assert.ok(codes.includes("RATE_LIMITED"), `some of 20 pings at once are limited: ${codes}`);
    assert.ok(codes.includes("pong"), `the burst passes: ${codes}`);
    assert.deepEqual([...new Set(codes)].sort(), ["RATE_LIMITED", "pong"]);

    // Without an ack, the refusal comes as an error event.
    for (let i = 0; i < 10; i++) socket.emit("typing", { room, typing: true });
    const error = await waitEvent(socket, "error", (e) => e.code === "RATE_LIMITED");
    assert.equal(error.type, "error");
    assert.ok(socket.connected, "rate limiting alone does not close the connection under rate_strikes");
  } finally {
    own.closeAll();
    await limited.dispose();
  }
});
