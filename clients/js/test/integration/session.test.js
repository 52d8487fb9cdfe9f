// A whole session against a real Herald: the API a chat page uses.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually } from "./herald.js";

const { herald, clients } = heraldForFile();

function client(user, extra) {
  const c = new HeraldClient(herald.wsUrl, { WebSocket, getToken: () => herald.token(user), requestTimeoutMs: 3000, ...extra });
  clients.push(c);
  return c;
}

test("two users: join, presence, publish, typing, direct, status, leave", { timeout: 15000 }, async () => {
  const alice = client("alice");
  const bob = client("bob");
  const welcome = await alice.connect();
  assert.equal(welcome.user, "alice");
  assert.equal(alice.state, "connected");
  assert.equal(alice.user, "alice");
  assert.equal(alice.node, "js-test");
  assert.equal(alice.heartbeatMs, 1000);
  assert.match(alice.conn, /^js-test-\d+$/);
  await bob.connect();

  const aRoom = alice.room("chat:session");
  const bRoom = bob.room("chat:session");
  const joined = await aRoom.join();
  assert.equal(joined.type, "joined");
  assert.equal(aRoom.joined, true);
  assert.deepEqual([...aRoom.users], ["alice"]);
  assert.equal(typeof aRoom.epoch, "string");

  const arrivals = [];
  aRoom.on("user_joined", (f) => arrivals.push(f.user));
  await bRoom.join();
  await eventually(() => arrivals.length === 1, 2000, "user_joined");
  assert.deepEqual(arrivals, ["bob"]);
  assert.equal(aRoom.count, 2);
  assert.deepEqual([...aRoom.users].sort(), ["alice", "bob"]);
  assert.deepEqual(await alice.presence("chat:session"), { users: ["alice", "bob"], count: 2 });

  const got = [];
  bRoom.on("message", (f) => got.push(f));
  const seq = await aRoom.publish({ text: "hi bob" });
  assert.equal(seq, 1);
  await eventually(() => got.length === 1, 2000, "bob's message");
  assert.deepEqual(got[0].data, { text: "hi bob" });
  assert.equal(got[0].from, "alice");
  assert.equal(bRoom.seq, 1);

  const typing = [];
  bRoom.on("typing", (f) => typing.push(f.typing));
  aRoom.startTyping();
  aRoom.stopTyping();
  await eventually(() => typing.length === 2, 2000, "typing frames");
  assert.deepEqual(typing, [true, false]);

  const directs = [];
  bob.on("direct", (f) => directs.push(f));
  await alice.direct("bob", { text: "lunch?" });
  await eventually(() => directs.length === 1, 2000, "direct");
  assert.equal(directs[0].from, "alice");

  assert.deepEqual(await alice.status(["bob", "nobody"]), { bob: true, nobody: false });
  assert.ok((await alice.ping()) >= 0);

  const departures = [];
  aRoom.on("user_left", (f) => departures.push(f.user));
  await bRoom.leave();
  await eventually(() => departures.length === 1, 2000, "user_left");
  assert.equal(aRoom.count, 1);
  assert.equal(bRoom.joined, false);
});

test("server errors reject with Herald's code", { timeout: 10000 }, async () => {
  const carol = client("carol");
  await carol.connect();
  await assert.rejects(carol.room("news").publish(1), (err) => err.code === "NOT_IN_ROOM" && err.frame.type === "error");
  await assert.rejects(carol.room("user:dave").join(), (err) => err.code === "FORBIDDEN");
  await assert.rejects(carol.request({ type: "shout" }), (err) => err.code === "UNKNOWN_TYPE");
  assert.equal(carol.state, "connected");
});

test("broadcasts from the server API reach the client", { timeout: 10000 }, async () => {
  const erin = client("erin");
  await erin.connect();
  const got = [];
  erin.on("broadcast", (f) => got.push(f.data));
  await herald.api("POST", "/api/broadcast", { data: { notice: "maintenance" } });
  await eventually(() => got.length === 1, 2000, "broadcast");
  assert.deepEqual(got, [{ notice: "maintenance" }]);
});
