// Tokens against a real Herald: a provider asked before every connection,
// and refusals (4001, 4002) that are never retried.

import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually, nowSeconds, pastExp, recordingWebSocket, sleep } from "./herald.js";

const { herald, clients } = heraldForFile();

function client(options) {
  const c = new HeraldClient(herald.wsUrl, { reconnect: { baseMs: 50, maxMs: 200 }, ...options });
  clients.push(c);
  return c;
}

const tokenOf = (url) => new URL(url).searchParams.get("token");

test("the token provider is asked again before a reconnect, and its new token is used", { timeout: 15000 }, async () => {
  const WebSocket = await recordingWebSocket();
  const issued = [];
  // The first token expires within a second or two; the connection outlives
  // it (Herald checks `exp` only when a token is presented).
  const firstExp = nowSeconds() + 1;
  const getToken = async () => {
    const token = herald.token("alice", issued.length === 0 ? { exp: firstExp } : { expIn: 600 });
    issued.push(token);
    return token;
  };
  const alice = client({ WebSocket, getToken });
  await alice.connect();
  assert.equal(issued.length, 1);
  const room = alice.room("chat:tokens");
  await room.join();
  await pastExp(firstExp); // the first token is now refused; the connection is still fine
  assert.equal(alice.state, "connected");
  assert.ok((await alice.ping()) >= 0);

  const firstConn = alice.conn;
  await herald.crashConnection(firstConn);
  await eventually(() => alice.state === "connected" && alice.conn !== firstConn, 5000, "the reconnect");
  assert.equal(issued.length, 2, "the provider was called once per connection");
  assert.equal(WebSocket.urls.length, 2);
  assert.equal(tokenOf(WebSocket.urls[0]), issued[0]);
  assert.equal(tokenOf(WebSocket.urls[1]), issued[1]);
  assert.equal(alice.user, "alice", "the second connection authenticated as alice");
  await eventually(() => room.joined, 2000, "the rejoin");
  assert.deepEqual((await alice.presence("chat:tokens")).users, ["alice"]);
});

test("a fixed token that expired meanwhile fails the reconnect with 4002, which ends the client", { timeout: 15000 }, async () => {
  // Why getToken exists: with `token` alone the reconnect presents the old,
  // expired token, and an invalid token is never retried.
  const WebSocket = await recordingWebSocket();
  const exp = nowSeconds() + 1;
  const bob = client({ WebSocket, token: herald.token("bob", { exp }) });
  const authErrors = [];
  bob.on("authError", (e) => authErrors.push(e));
  await bob.connect();
  await pastExp(exp);
  await herald.crashConnection(bob.conn);
  await eventually(() => bob.state === "closed", 5000, "the client to close");
  assert.deepEqual(authErrors, [{ code: 4002, reason: "invalid token" }]);
  await sleep(500); // well past the backoff window: nothing more
  assert.equal(WebSocket.sockets.length, 2);
});

test("a provider whose first token is already expired gets 4002 and is not asked again", { timeout: 10000 }, async () => {
  const WebSocket = await recordingWebSocket();
  let calls = 0;
  const carol = client({
    WebSocket,
    getToken: async () => {
      calls++;
      return herald.token("carol", { expIn: -10 });
    },
  });
  const authErrors = [];
  carol.on("authError", (e) => authErrors.push(e));
  await assert.rejects(carol.connect(), (err) => err.code === "AUTH" && err.closeCode === 4002);
  assert.equal(carol.state, "closed");
  assert.deepEqual(authErrors, [{ code: 4002, reason: "invalid token" }]);
  await sleep(500);
  assert.equal(calls, 1);
  assert.equal(WebSocket.sockets.length, 1);
});

test("a token with a bad signature: authError 4002, closed, one connection only", { timeout: 10000 }, async () => {
  const WebSocket = await recordingWebSocket();
  const forged = herald.token("dave").replace(/.{4}$/, "AAAA");
  const dave = client({ WebSocket, token: forged });
  const events = [];
  dave.on("authError", (e) => events.push(["authError", e.code]));
  dave.on("closed", () => events.push(["closed"]));
  dave.on("disconnected", () => events.push(["disconnected"]));
  const pending = dave.request({ type: "ping" }); // waits for a connection that never comes
  await assert.rejects(dave.connect(), (err) => err.code === "AUTH");
  await assert.rejects(pending, (err) => err.code === "AUTH");
  assert.deepEqual(events, [["authError", 4002], ["closed"]]);
  await sleep(500);
  assert.equal(WebSocket.sockets.length, 1);
});

test("no token where the server requires one: 4001 after auth.timeout_ms, not retried", { timeout: 10000 }, async () => {
  const WebSocket = await recordingWebSocket();
  const anon = client({ WebSocket });
  const started = Date.now();
  await assert.rejects(anon.connect(), (err) => err.closeCode === 4001);
  assert.ok(Date.now() - started >= 900, "closed by the server's auth timeout (1 s here)");
  assert.equal(anon.conn !== null, true, "the welcome (user null) had arrived");
  assert.equal(anon.state, "closed");
  await sleep(300);
  assert.equal(WebSocket.sockets.length, 1);
});
