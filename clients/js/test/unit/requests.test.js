import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { eventually, fakeOptions, fakeWebSocket, sleep } from "./fake-socket.js";

async function connected(extra) {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket, extra));
  const ready = client.connect();
  FakeSocket.last().welcome();
  await ready;
  return { client, FakeSocket, socket: FakeSocket.last() };
}

test("replies are matched to requests by id, whatever their order", async () => {
  const { client, socket } = await connected();
  const a = client.request({ type: "presence", room: "a" });
  const b = client.request({ type: "presence", room: "b" });
  const [fa, fb] = socket.ofType("presence");
  assert.equal(typeof fa.id, "string");
  assert.notEqual(fa.id, fb.id);
  socket.receive({ type: "presence", room: "b", users: ["bob"], count: 1, id: fb.id });
  socket.receive({ type: "presence", room: "a", users: ["ann"], count: 1, id: fa.id });
  assert.deepEqual((await a).users, ["ann"]);
  assert.deepEqual((await b).users, ["bob"]);
  client.close();
});

test("a reply with an unknown id is ignored, an error with one rejects, an error without one is an event", async () => {
  const { client, socket } = await connected();
  const errors = [];
  client.on("error", (e) => errors.push(e));
  socket.receive({ type: "pong", id: "999" }); // nobody asked: nothing happens

  const p = client.request({ type: "publish", room: "news", data: 1 });
  socket.receive({ type: "error", code: "NOT_IN_ROOM", message: "not in room", id: socket.last("publish").id });
  await assert.rejects(p, (err) => err.code === "NOT_IN_ROOM" && err.frame.message === "not in room");

  socket.receive({ type: "error", code: "RATE_LIMITED", message: "slow down", id: "998" }); // unknown id: ignored
  socket.receive({ type: "error", code: "INVALID_JSON", message: "the frame is not valid JSON" });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "INVALID_JSON");
  client.close();
});

test("helpers shape their replies", async () => {
  const { client, socket } = await connected();
  const status = client.status(["u1", "u2"]);
  socket.reply("status", { type: "status", online: { u1: true, u2: false } });
  assert.deepEqual(await status, { u1: true, u2: false });

  const presence = client.presence("live.final");
  socket.reply("presence", { type: "presence", room: "live.final", users: [], count: 18234 });
  assert.deepEqual(await presence, { users: [], count: 18234 });

  const direct = client.direct("bob", { text: "lunch?" });
  assert.deepEqual(socket.last("direct"), { type: "direct", to: "bob", data: { text: "lunch?" }, id: socket.last("direct").id });
  socket.reply("direct", { type: "ack" });
  assert.equal(await direct, undefined);

  const ping = client.ping();
  socket.reply("ping", { type: "pong" });
  assert.ok((await ping) >= 0);
  client.close();
});

test("a request without a reply times out with TIMEOUT, and its late reply is ignored", async () => {
  const { client, socket } = await connected({ requestTimeoutMs: 30 });
  const started = Date.now();
  const p = client.request({ type: "ping" });
  await assert.rejects(p, (err) => err.code === "TIMEOUT");
  assert.ok(Date.now() - started >= 25);
  const errors = [];
  client.on("error", (e) => errors.push(e));
  socket.reply("ping", { type: "pong" }); // too late: matches nothing, no event
  assert.equal(errors.length, 0);
  // Per call timeouts override the default.
  await assert.rejects(client.request({ type: "ping" }, { timeoutMs: 5 }), (err) => err.code === "TIMEOUT");
  client.close();
});

test("close() rejects every unsettled request with CLOSED, and later ones at once", async () => {
  const { client } = await connected();
  const sent = client.request({ type: "ping" });
  client.close();
  await assert.rejects(sent, (err) => err.code === "CLOSED");
  await assert.rejects(client.request({ type: "ping" }), (err) => err.code === "CLOSED");
  assert.equal(client.state, "closed");
});

test("whileDisconnected 'wait': requests wait for the connection and go out in order", async () => {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket));
  const first = client.request({ type: "ping" });
  const second = client.request({ type: "status", users: ["x"] });
  client.connect();
  const socket = FakeSocket.last();
  assert.equal(socket.sent.length, 0);
  socket.welcome();
  assert.deepEqual(socket.sent.map((f) => f.type), ["ping", "status"]);
  socket.reply("ping", { type: "pong" });
  socket.reply("status", { type: "status", online: { x: false } });
  assert.equal((await first).type, "pong");
  assert.equal((await second).type, "status");
  client.close();
});

test("whileDisconnected 'reject' (client option or per call) refuses at once with DISCONNECTED", async () => {
  const FakeSocket = fakeWebSocket();
  const rejecting = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket, { whileDisconnected: "reject" }));
  await assert.rejects(rejecting.request({ type: "ping" }), (err) => err.code === "DISCONNECTED");
  // ... but a call may still choose to wait.
  const waits = rejecting.request({ type: "ping" }, { whileDisconnected: "wait", timeoutMs: 20 });
  await assert.rejects(waits, (err) => err.code === "TIMEOUT");

  const waiting = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket));
  await assert.rejects(waiting.request({ type: "ping" }, { whileDisconnected: "reject" }), (err) => err.code === "DISCONNECTED");
});

test("waiting requests are bounded by maxPending and by their own timeout", async () => {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket, { maxPending: 2, requestTimeoutMs: 40 }));
  const a = client.request({ type: "ping" });
  const b = client.request({ type: "ping" });
  await assert.rejects(client.request({ type: "ping" }), (err) => err.code === "TOO_MANY_PENDING");
  await assert.rejects(a, (err) => err.code === "TIMEOUT");
  await assert.rejects(b, (err) => err.code === "TIMEOUT");
  // Timed-out requests no longer take a place, nor get sent.
  client.connect();
  FakeSocket.last().welcome();
  assert.equal(FakeSocket.last().sent.length, 0);
  client.close();
});

test("on a lost connection, a sent publish fails with CONNECTION_LOST and a sent presence is sent again", async () => {
  const { client, FakeSocket, socket } = await connected();
  const publish = client.request({ type: "publish", room: "r", data: 1 });
  const presence = client.presence("r");
  socket.serverClose(1011, "internal error");
  await assert.rejects(publish, (err) => err.code === "CONNECTION_LOST");
  await eventually(() => FakeSocket.instances.length === 2, 1000, "a reconnect");
  const next = FakeSocket.last();
  next.welcome();
  assert.deepEqual(next.sent.map((f) => f.type), ["presence"]);
  next.reply("presence", { type: "presence", room: "r", users: ["alice"], count: 1 });
  assert.deepEqual(await presence, { users: ["alice"], count: 1 });
  client.close();
});

test("a frame that is not JSON, or not an object, is ignored", async () => {
  const { client, socket } = await connected();
  socket.onmessage({ data: "not json" });
  socket.onmessage({ data: "42" });
  socket.onmessage({ data: Buffer.from(JSON.stringify({ type: "broadcast", data: 1, ts: 1 })) });
  const got = [];
  client.on("broadcast", (f) => got.push(f));
  socket.receive({ type: "broadcast", data: 2, ts: 2 });
  assert.deepEqual(got.map((f) => f.data), [2]);
  await sleep(1);
  client.close();
});
