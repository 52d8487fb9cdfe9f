import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { eventually, fakeOptions, fakeWebSocket, nextSocket, sleep } from "./fake-socket.js";

function client(extra) {
  const FakeSocket = fakeWebSocket();
  const c = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket, extra));
  const states = [];
  c.on("state", (s) => states.push(s));
  return { client: c, FakeSocket, states };
}

for (const code of [4001, 4002, 4003]) {
  test(`close ${code} is an auth error: closed, connect() rejects, never a second socket`, async () => {
    const { client: c, FakeSocket, states } = client();
    const authErrors = [];
    c.on("authError", (e) => authErrors.push(e));
    const ready = c.connect();
    FakeSocket.last().open();
    FakeSocket.last().serverClose(code, "invalid token");
    await assert.rejects(ready, (err) => err.code === "AUTH" && err.closeCode === code);
    assert.deepEqual(authErrors, [{ code, reason: "invalid token" }]);
    assert.equal(c.state, "closed");
    assert.deepEqual(states, ["connecting", "closed"]);
    await sleep(60); // several backoff windows (base 5 ms, max 20 ms)
    assert.equal(FakeSocket.instances.length, 1);
  });
}

test("close 4008 reconnects, with a fresh token, and rejoins rooms with since and epoch", async () => {
  let calls = 0;
  const { client: c, FakeSocket, states } = client({ token: undefined, getToken: async () => `tok-${++calls}` });
  const ready = c.connect();
  await eventually(() => FakeSocket.instances.length === 1);
  const s1 = FakeSocket.last();
  assert.equal(s1.token, "tok-1");
  s1.welcome();
  await ready;
  const room = c.room("chat:1");
  const joined = room.join();
  s1.reply("join", { type: "joined", room: "chat:1", users: ["alice"], count: 1, seq: 3, epoch: "E" });
  await joined;
  s1.receive({ type: "message", room: "chat:1", from: "bob", data: 1, seq: 4, ts: 1 });

  const disconnects = [];
  c.on("disconnected", (d) => disconnects.push(d));
  s1.serverClose(4008, "slow consumer");
  assert.deepEqual(disconnects, [{ code: 4008, reason: "slow consumer" }]);
  assert.equal(c.state, "disconnected");
  const s2 = await nextSocket(FakeSocket, s1);
  assert.equal(s2.token, "tok-2");
  assert.equal(calls, 2);
  s2.welcome();
  const rejoin = s2.last("join");
  assert.equal(rejoin.room, "chat:1");
  assert.equal(rejoin.since, 4);
  assert.equal(rejoin.epoch, "E");
  assert.deepEqual(states, ["connecting", "connected", "disconnected", "connecting", "connected"]);
  c.close();
});

for (const [code, reason] of [[1000, "heartbeat timeout"], [1001, "server shutting down"], [1006, ""], [1011, "internal error"], [1008, "rate limit exceeded"]]) {
  test(`close ${code} ${reason || "(no close frame)"} reconnects`, async () => {
    const { client: c, FakeSocket } = client();
    c.connect();
    FakeSocket.last().welcome();
    FakeSocket.last().serverClose(code, reason);
    const s2 = await nextSocket(FakeSocket, FakeSocket.last());
    s2.welcome();
    assert.equal(c.state, "connected");
    c.close();
  });
}

test("connect() keeps trying through failed attempts and resolves at the first welcome", async () => {
  const { client: c, FakeSocket } = client();
  const reconnecting = [];
  c.on("reconnecting", (r) => reconnecting.push(r));
  const ready = c.connect();
  for (let i = 0; i < 3; i++) {
    const s = FakeSocket.last();
    s.serverClose(1006, "");
    await nextSocket(FakeSocket, s);
  }
  FakeSocket.last().welcome({ user: "alice", conn: "n-4" });
  const welcome = await ready;
  assert.equal(welcome.conn, "n-4");
  assert.equal(c.user, "alice");
  assert.equal(c.conn, "n-4");
  assert.equal(c.node, "n");
  assert.deepEqual(reconnecting.map((r) => r.attempt), [0, 1, 2]);
  for (const r of reconnecting) assert.ok(r.delayMs >= 0 && r.delayMs < 20);
  c.close();
});

test("the backoff starts over once a connection has lasted resetAfterMs", async () => {
  const { client: c, FakeSocket } = client({ reconnect: { baseMs: 5, maxMs: 20, resetAfterMs: 30 } });
  const attempts = [];
  c.on("reconnecting", (r) => attempts.push(r.attempt));
  c.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().serverClose(1011, ""); // dropped at once: not stable
  let s = await nextSocket(FakeSocket, FakeSocket.last());
  s.welcome();
  s.serverClose(1011, "");
  s = await nextSocket(FakeSocket, s);
  s.welcome();
  await sleep(50); // stable now
  s.serverClose(1011, "");
  await nextSocket(FakeSocket, s);
  assert.deepEqual(attempts, [0, 1, 0]);
  c.close();
});

test("close() while waiting to reconnect stops for good", async () => {
  const { client: c, FakeSocket } = client({ reconnect: { baseMs: 40, maxMs: 40, random: () => 0.99 } });
  const ready = c.connect();
  FakeSocket.last().welcome();
  FakeSocket.last().serverClose(1006, "");
  c.close();
  await sleep(80);
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(c.state, "closed");
  await ready; // it had resolved at the first welcome
});

test("close() before the first welcome rejects connect() with CLOSED and closes the socket", async () => {
  const { client: c, FakeSocket } = client();
  const ready = c.connect();
  const s = FakeSocket.last();
  s.open();
  c.close();
  await assert.rejects(ready, (err) => err.code === "CLOSED");
  assert.equal(s.closedByClient.code, 1000);
});

test("a client closed by close() can connect() again, in no room", async () => {
  const { client: c, FakeSocket } = client();
  c.connect();
  FakeSocket.last().welcome();
  const room = c.room("r");
  const joined = room.join();
  FakeSocket.last().reply("join", { type: "joined", room: "r", users: ["alice"], count: 1, seq: 0, epoch: "E" });
  await joined;
  c.close();
  assert.equal(room.joined, false);
  const ready = c.connect();
  FakeSocket.last().welcome();
  await ready;
  assert.equal(FakeSocket.last().ofType("join").length, 0);
  c.close();
});

test("a half-open connection is detected: quiet, ping, no answer, new socket", async () => {
  const { client: c, FakeSocket } = client({ heartbeat: { marginMs: 10, probeTimeoutMs: 30 } });
  const disconnects = [];
  c.on("disconnected", (d) => disconnects.push(d));
  c.connect();
  const s1 = FakeSocket.last();
  s1.welcome({ heartbeat_ms: 20 });
  await eventually(() => s1.ofType("ping").length === 1, 500, "a probe");
  // Answered: the connection stays, and the next quiet spell probes again.
  s1.reply("ping", { type: "pong" });
  await eventually(() => s1.ofType("ping").length === 2, 500, "a second probe");
  assert.equal(FakeSocket.instances.length, 1);
  // Unanswered: the socket is dropped and a new one opened.
  const s2 = await nextSocket(FakeSocket, s1, 500);
  assert.ok(s1.terminated || s1.closedByClient, "the dead socket was closed");
  assert.equal(disconnects.length, 1);
  assert.equal(disconnects[0].code, 1006);
  s2.welcome();
  assert.equal(c.state, "connected");
  c.close();
});

test("frames keep the watchdog quiet: no probe while the server talks", async () => {
  const { client: c, FakeSocket } = client({ heartbeat: { marginMs: 10, probeTimeoutMs: 30 } });
  c.connect();
  const s = FakeSocket.last();
  s.welcome({ heartbeat_ms: 300 }); // a probe after 310 ms of quiet
  // Over 400 ms in all, never quiet for more than a stalled 10 ms sleep.
  for (let i = 0; i < 40; i++) {
    await sleep(10);
    s.receive({ type: "broadcast", data: i, ts: 1 });
  }
  assert.equal(s.ofType("ping").length, 0);
  c.close();
});

test("offline drops the socket without backoff; online reconnects at once", async () => {
  const network = new EventTarget();
  const { client: c, FakeSocket, states } = client({ network, reconnect: { baseMs: 10000, maxMs: 10000 } });
  const reconnecting = [];
  c.on("reconnecting", (r) => reconnecting.push(r));
  c.connect();
  const s1 = FakeSocket.last();
  s1.welcome();
  network.dispatchEvent(new Event("offline"));
  assert.equal(c.state, "disconnected");
  assert.ok(s1.closedByClient || s1.terminated);
  await sleep(20);
  assert.equal(FakeSocket.instances.length, 1);
  network.dispatchEvent(new Event("online"));
  assert.equal(FakeSocket.instances.length, 2, "online reconnects at once, not after the 10 s backoff");
  FakeSocket.last().welcome();
  assert.deepEqual(reconnecting, []);
  assert.deepEqual(states, ["connecting", "connected", "disconnected", "connecting", "connected"]);
  c.close();
  // close() stops listening to the network.
  network.dispatchEvent(new Event("online"));
  assert.equal(FakeSocket.instances.length, 2);
});

test("a failing getToken is reported and retried with backoff", async () => {
  let calls = 0;
  const { client: c, FakeSocket } = client({
    token: undefined,
    getToken: async () => {
      if (++calls < 3) throw new Error("auth backend down");
      return "good";
    },
  });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const ready = c.connect();
  await eventually(() => FakeSocket.instances.length === 1, 1000, "a socket after two failures");
  assert.equal(FakeSocket.last().token, "good");
  FakeSocket.last().welcome();
  await ready;
  assert.equal(errors.length, 2);
  assert.equal(errors[0].code, "TOKEN");
  c.close();
});

test("the URL keeps its query, takes the token, and http(s) becomes ws(s)", async () => {
  const FakeSocket = fakeWebSocket();
  const c = new HeraldClient("https://herald.test/ws?x=1", fakeOptions(FakeSocket, { token: "a b" }));
  c.connect();
  const url = new URL(FakeSocket.last().url);
  assert.equal(url.protocol, "wss:");
  assert.equal(url.searchParams.get("x"), "1");
  assert.equal(url.searchParams.get("token"), "a b");
  c.close();
  assert.throws(() => new HeraldClient("ftp://x/ws", fakeOptions(FakeSocket)), TypeError);
  assert.throws(() => new HeraldClient("ws://x/ws", { WebSocket: undefined }), /WebSocket/);
});

test("a room left while the connection drops is not joined again on the next one", async () => {
  const { client: c, FakeSocket } = client();
  const ready = c.connect();
  await eventually(() => FakeSocket.instances.length === 1);
  const s1 = FakeSocket.last();
  s1.welcome();
  await ready;
  const room = c.room("chat:gone");
  const joined = room.join();
  s1.reply("join", { type: "joined", room: "chat:gone", users: ["alice"], count: 1, seq: 0, epoch: "E" });
  await joined;
  const left = room.leave();
  assert.equal(s1.last("leave").room, "chat:gone");
  s1.serverClose(1006, "");
  const s2 = await nextSocket(FakeSocket, s1);
  s2.welcome();
  await sleep(10);
  assert.equal(s2.last("join"), undefined, "no rejoin of a room being left");
  s2.reply("leave", { type: "left", room: "chat:gone" });
  await left;
  assert.equal(room.joined, false);
  c.close();
});

test("an attempt that is never welcomed is given up and tried again", async () => {
  const { client: c, FakeSocket } = client({ connectTimeoutMs: 30 });
  const ready = c.connect();
  await eventually(() => FakeSocket.instances.length === 1);
  FakeSocket.last().open(); // open, but the server never says welcome
  const s2 = await nextSocket(FakeSocket, FakeSocket.last());
  s2.welcome();
  await ready;
  assert.equal(c.state, "connected");
  c.close();
});
