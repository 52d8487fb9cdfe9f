import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { eventually, fakeOptions, fakeWebSocket, nextSocket } from "./fake-socket.js";

async function inRoom(joinedFields = {}) {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket));
  const ready = client.connect();
  const socket = FakeSocket.last();
  socket.welcome();
  await ready;
  const room = client.room("chat:1");
  const events = [];
  for (const name of ["message", "gap", "reset", "joined", "user_joined", "user_left", "typing", "left"]) {
    room.on(name, (payload) => events.push([name, payload]));
  }
  const joined = room.join();
  socket.reply("join", { type: "joined", room: "chat:1", users: ["alice", "bob"], count: 2, seq: 4, epoch: "e1", ...joinedFields });
  await joined;
  events.length = 0;
  const message = (seq, data = seq) => socket.receive({ type: "message", room: "chat:1", from: "bob", data, seq, ts: 1 });
  return { client, FakeSocket, socket, room, events, message };
}

const seqs = (events, name = "message") => events.filter(([n]) => n === name).map(([, f]) => f.seq);

test("room() returns the same object for the same name", () => {
  const client = new HeraldClient("ws://h/ws", fakeOptions(fakeWebSocket()));
  assert.equal(client.room("a"), client.room("a"));
  assert.notEqual(client.room("a"), client.room("b"));
});

test("joined sets users, count, seq and epoch; user_joined and user_left keep them current", async () => {
  const { client, socket, room, events } = await inRoom();
  assert.equal(room.joined, true);
  assert.deepEqual([...room.users], ["alice", "bob"]);
  assert.equal(room.count, 2);
  assert.equal(room.seq, 4);
  assert.equal(room.epoch, "e1");
  const users = room.users; // live: the same Set stays current
  socket.receive({ type: "user_joined", room: "chat:1", user: "carol" });
  assert.equal(room.count, 3);
  assert.ok(users.has("carol"));
  socket.receive({ type: "user_left", room: "chat:1", user: "bob" });
  assert.equal(room.count, 2);
  assert.deepEqual([...users].sort(), ["alice", "carol"]);
  assert.deepEqual(events.map(([n]) => n), ["user_joined", "user_left"]);
  client.close();
});

test("in a room whose namespace hides the list, count counts and users stays empty", async () => {
  const { client, socket, room } = await inRoom({ users: [], count: 5 });
  assert.equal(room.users.size, 0);
  assert.equal(room.count, 5);
  socket.receive({ type: "user_joined", room: "chat:1", user: "zed" });
  assert.equal(room.count, 6);
  socket.receive({ type: "user_left", room: "chat:1", user: "zed" });
  socket.receive({ type: "user_left", room: "chat:1", user: "yan" });
  assert.equal(room.count, 4);
  assert.equal(room.users.size, 0);
  client.close();
});

test("messages in order are delivered; duplicates are dropped; a jump is a gap, then the message", async () => {
  const { client, room, events, message } = await inRoom();
  message(5);
  message(5); // duplicate
  message(4); // older than what we have
  message(6);
  message(9);
  assert.deepEqual(
    events.map(([n, p]) => (n === "gap" ? ["gap", p.from, p.to] : [n, p.seq])),
    [["message", 5], ["message", 6], ["gap", 7, 8], ["message", 9]],
  );
  assert.deepEqual(events.find(([n]) => n === "gap")[1], { room: "chat:1", from: 7, to: 8 });
  assert.equal(room.seq, 9);
  client.close();
});

test("after a recovering join, seq follows the replay rather than jumping to joined.seq", async () => {
  const { client, FakeSocket, socket, room, events, message } = await inRoom();
  message(5);
  socket.serverClose(4008, "slow consumer");
  const sock2 = await nextSocket(FakeSocket, socket);
  sock2.welcome();
  const rejoin = sock2.last("join");
  assert.deepEqual({ ...rejoin, id: undefined }, { type: "join", room: "chat:1", since: 5, epoch: "e1", id: undefined });
  events.length = 0;
  // joined (latest 8), then the replay 6..8 in the same read, then a live 9.
  sock2.reply("join", { type: "joined", room: "chat:1", users: ["alice", "bob"], count: 2, seq: 8, epoch: "e1", recovered: true });
  assert.equal(room.seq, 5);
  const m = (seq) => sock2.receive({ type: "message", room: "chat:1", from: "bob", data: seq, seq, ts: 1 });
  m(5); // overlap: dropped
  m(6);
  m(7);
  m(8);
  m(9);
  assert.deepEqual(seqs(events), [6, 7, 8, 9]);
  assert.equal(events.filter(([n]) => n === "gap" || n === "reset").length, 0);
  const replayed = [];
  room.on("message", (f, meta) => replayed.push(meta.replayed));
  m(10);
  assert.deepEqual(replayed, [false]);
  client.close();
});

test("a join the server cannot recover emits reset and carries on from joined.seq", async () => {
  const { client, FakeSocket, socket, room, events, message } = await inRoom();
  message(5);
  socket.serverClose(1001, "server shutting down");
  const sock2 = await nextSocket(FakeSocket, socket);
  sock2.welcome();
  events.length = 0;
  sock2.reply("join", { type: "joined", room: "chat:1", users: ["alice"], count: 1, seq: 0, epoch: "e2", recovered: false });
  assert.deepEqual(events.map(([n]) => n), ["joined", "reset"]);
  assert.deepEqual(events[1][1], { room: "chat:1", seq: 0, epoch: "e2" });
  assert.equal(room.seq, 0);
  assert.equal(room.epoch, "e2");
  sock2.receive({ type: "message", room: "chat:1", from: "bob", data: 1, seq: 1, ts: 1 });
  assert.deepEqual(seqs(events), [1]);
  assert.equal(events.filter(([n]) => n === "gap").length, 0);
  client.close();
});

test("our own echo:false publish leaves no false gap", async () => {
  const { client, socket, room, events, message } = await inRoom();
  const published = room.publish({ text: "quiet" }, { echo: false });
  assert.equal(socket.last("publish").echo, false);
  socket.reply("publish", { type: "ack", seq: 5 });
  assert.equal(await published, 5);
  message(6);
  // Two of ours in a row, acked before the next message.
  const p1 = room.publish(1, { echo: false });
  socket.reply("publish", { type: "ack", seq: 7 });
  const p2 = room.publish(2, { echo: false });
  socket.reply("publish", { type: "ack", seq: 8 });
  await Promise.all([p1, p2]);
  message(9);
  assert.deepEqual(seqs(events), [6, 9]);
  assert.equal(events.filter(([n]) => n === "gap").length, 0);
  client.close();
});

test("publish resolves with the ack's seq, and frames of a room left are dropped", async () => {
  const { client, socket, room, events, message } = await inRoom();
  const published = room.publish({ text: "hi" });
  assert.deepEqual({ ...socket.last("publish"), id: 0 }, { type: "publish", room: "chat:1", data: { text: "hi" }, id: 0 });
  socket.reply("publish", { type: "ack", seq: 5 });
  assert.equal(await published, 5);
  const left = room.leave();
  socket.reply("leave", { type: "left", room: "chat:1" });
  await left;
  assert.equal(room.joined, false);
  message(6);
  socket.receive({ type: "typing", room: "chat:1", user: "bob", typing: true });
  assert.deepEqual(events.map(([n]) => n), ["left"]);
  client.close();
});

test("a room left while disconnected is not joined again", async () => {
  const { client, FakeSocket, socket, room } = await inRoom();
  socket.serverClose(1006, "");
  assert.equal(room.joined, false);
  await room.leave(); // resolves at once: the next connection is in no room
  const sock2 = await nextSocket(FakeSocket, socket);
  sock2.welcome();
  assert.equal(sock2.ofType("join").length, 0);
  client.close();
});

test("a rejoin refused for good is reported as an error and not retried", async () => {
  const { client, FakeSocket, socket, room } = await inRoom();
  const errors = [];
  client.on("error", (e) => errors.push(e));
  socket.serverClose(1011, "internal error");
  const sock2 = await nextSocket(FakeSocket, socket);
  sock2.welcome();
  sock2.reply("join", { type: "error", code: "FORBIDDEN", message: "this user may not join that room" });
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "FORBIDDEN");
  assert.equal(errors[0].room, "chat:1");
  assert.equal(room.joined, false);
  sock2.serverClose(1011, "internal error");
  const sock3 = await nextSocket(FakeSocket, sock2);
  sock3.welcome();
  assert.equal(sock3.ofType("join").length, 0);
  client.close();
});

test("our own echo:false messages are not asked back after a reconnect, nor delivered when replayed", async () => {
  const FakeSocket = fakeWebSocket();
  const c = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket));
  const ready = c.connect();
  await eventually(() => FakeSocket.instances.length === 1);
  const s1 = FakeSocket.last();
  s1.welcome();
  await ready;
  const room = c.room("chat:own");
  const messages = [];
  room.on("message", (f) => messages.push(f.seq));
  const joined = room.join();
  s1.reply("join", { type: "joined", room: "chat:own", users: ["alice"], count: 1, seq: 0, epoch: "E" });
  await joined;
  // Ours is 2, acked before 1 (someone else's) arrives.
  const published = room.publish("mine", { echo: false });
  s1.reply("publish", { type: "ack", seq: 2 });
  assert.equal(await published, 2);
  s1.receive({ type: "message", room: "chat:own", from: "bob", data: 1, seq: 1, ts: 1 });
  assert.equal(room.seq, 2, "past our own message, which never comes");
  s1.serverClose(1006, "");
  const s2 = await nextSocket(FakeSocket, s1);
  s2.welcome();
  assert.equal(s2.last("join").since, 2);
  s2.reply("join", { type: "joined", room: "chat:own", users: ["alice"], count: 1, seq: 3, epoch: "E", recovered: true });
  s2.receive({ type: "message", room: "chat:own", from: "bob", data: 3, seq: 3, ts: 1 });
  assert.deepEqual(messages, [1, 3]);
  c.close();
});
