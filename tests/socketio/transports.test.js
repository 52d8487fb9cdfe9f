// Engine.IO transports: WebSocket only, HTTP long polling only, and the
// default (polling first, then the upgrade to WebSocket), with messages
// flowing on each and none lost or repeated across the upgrade; the open
// packet's settings; polling sessions that stop polling; CORS.
import { test } from "node:test";
import assert from "node:assert/strict";
import { NodeWebSocket } from "engine.io-client";
import WebSocket from "ws";
import {
  Herald,
  Clients,
  WAIT,
  ack,
  connected,
  eventually,
  heraldForFile,
  seqs,
  sleep,
  uniqueRoom,
  waitEvent,
  waitEvents,
} from "./herald.js";

const { herald, clients } = heraldForFile();

const transportOf = (socket) => socket.io.engine.transport.name;

/** Records, for every `message` event, the transport it came over. */
function recordTransports(socket) {
  const over = [];
  socket.on("message", (m) => over.push([m.seq, transportOf(socket)]));
  return over;
}

test("WebSocket only", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice", { transports: ["websocket"] });
  assert.equal(transportOf(socket), "websocket");
  await ack(socket, "join", { room });
  await herald.publish(room, "one");
  assert.equal((await ack(socket, "publish", { room, data: "two" })).seq, 2);
  const got = await waitEvents(socket, "message", 2, (m) => m.room === room);
  assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, "one"], [2, "two"]]);
});

test("polling only: messages arrive over long polls, and there is no upgrade", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice", { transports: ["polling"] });
  assert.equal(transportOf(socket), "polling");
  await ack(socket, "join", { room });
  for (let i = 1; i <= 5; i++) {
    assert.equal(await herald.publish(room, `api ${i}`), i);
    await waitEvent(socket, "message", (m) => m.room === room && m.seq === i);
  }
  assert.equal((await ack(socket, "publish", { room, data: "from the client" })).seq, 6);
  const got = await waitEvents(socket, "message", 6, (m) => m.room === room);
  assert.deepEqual(seqs(got), [1, 2, 3, 4, 5, 6]);
  assert.equal(transportOf(socket), "polling");
});

test("default transports: polling upgrades to WebSocket, and a stream published across the upgrade arrives once, in order", async () => {
  const room = uniqueRoom();
  const socket = await clients.sioAs(herald, "alice");
  const over = recordTransports(socket);
  await ack(socket, "join", { room });
  // Publish until the client is on WebSocket, and a few more after.
  let published = 0;
  let afterUpgrade = 0;
  const deadline = Date.now() + WAIT;
  while (afterUpgrade < 5) {
    if (Date.now() > deadline) throw new Error(`no upgrade to WebSocket: still ${transportOf(socket)}`);
    published = await herald.publish(room, `n${published + 1}`);
    if (transportOf(socket) === "websocket" && !socket.io.engine.upgrading) afterUpgrade++;
  }
  const got = await waitEvents(socket, "message", published, (m) => m.room === room);
  assert.deepEqual(
    seqs(got),
    Array.from({ length: published }, (_, i) => i + 1),
  );
  assert.equal(transportOf(socket), "websocket");
  assert.ok(over.some(([, t]) => t === "websocket"), `some messages came over WebSocket: ${JSON.stringify(over)}`);
  // Events still go both ways after the upgrade.
  const live = await ack(socket, "publish", { room, data: "after" });
  assert.equal(live.seq, published + 1);
  await waitEvent(socket, "message", (m) => m.room === room && m.seq === live.seq);
});

test("default transports, upgrade held back: messages flow over polling, then over WebSocket after the upgrade", async () => {
  // Hold the WebSocket probe until this test lets it go, as a slow network
  // would, so the first messages surely travel over polling.
  let release;
  const gate = new Promise((r) => (release = r));
  const doOpen = Object.getPrototypeOf(NodeWebSocket.prototype).doOpen;
  NodeWebSocket.prototype.doOpen = function () {
    gate.then(() => doOpen.call(this));
  };
  try {
    const room = uniqueRoom();
    const socket = await clients.sioAs(herald, "alice");
    const over = recordTransports(socket);
    const upgraded = new Promise((r) => socket.io.engine.once("upgrade", r));
    assert.equal(transportOf(socket), "polling");

    assert.equal((await ack(socket, "join", { room })).type, "joined");
    assert.equal(await herald.publish(room, "a"), 1);
    assert.equal((await ack(socket, "publish", { room, data: "b" })).seq, 2);
    await waitEvents(socket, "message", 2, (m) => m.room === room);
    assert.equal(transportOf(socket), "polling");

    release();
    await eventually(() => transportOf(socket) === "websocket", WAIT, "the upgrade to WebSocket");
    await upgraded;

    assert.equal(await herald.publish(room, "c"), 3);
    assert.equal((await ack(socket, "publish", { room, data: "d" })).seq, 4);
    const got = await waitEvents(socket, "message", 4, (m) => m.room === room);
    assert.deepEqual(got.map((m) => m.data), ["a", "b", "c", "d"]);
    assert.deepEqual(over, [
      [1, "polling"],
      [2, "polling"],
      [3, "websocket"],
      [4, "websocket"],
    ]);
  } finally {
    delete NodeWebSocket.prototype.doOpen;
    release();
  }
});

test("the open packet: maxPayload is limits.max_message_bytes, pingInterval is heartbeat.interval_ms", async () => {
  const tuned = new Herald({ config: { limits: { max_message_bytes: 12345 }, heartbeat: { interval_ms: 700, timeout_ms: 4000 } } });
  const own = new Clients();
  await tuned.start();
  try {
    for (const transport of ["websocket", "polling"]) {
      const socket = own.sio(tuned, { transports: [transport], auth: { token: tuned.token("alice") } });
      await connected(socket);
      const engine = socket.io.engine;
      assert.equal(engine._maxPayload, 12345, transport);
      assert.equal(engine._pingInterval, 700, transport);
      assert.equal(typeof engine._pingTimeout, "number");
      assert.ok(engine._pingTimeout > 0);
    }
    // The same, in the raw handshake.
    const response = await fetch(`${tuned.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(response.status, 200);
    const body = await response.text();
    assert.equal(body[0], "0", body);
    const open = JSON.parse(body.slice(1));
    assert.equal(typeof open.sid, "string");
    assert.deepEqual(open.upgrades, ["websocket"]);
    assert.equal(open.pingInterval, 700);
    assert.equal(open.maxPayload, 12345);
  } finally {
    own.closeAll();
    await tuned.dispose();
  }
});

test("a polling session that stops polling is dropped after pingInterval + pingTimeout", async () => {
  const quick = new Herald({ config: { heartbeat: { interval_ms: 300, timeout_ms: 900 } } });
  await quick.start();
  try {
    const base = `${quick.url}/socket.io/?EIO=4&transport=polling`;

    const unknown = await fetch(`${base}&sid=nosuchsession`);
    assert.equal(unknown.status, 400);
    assert.deepEqual(JSON.parse(await unknown.text()), { code: 1, message: "Session ID unknown" });

    const handshake = await fetch(base);
    assert.equal(handshake.status, 200);
    const text = await handshake.text();
    const open = JSON.parse(text.slice(1));
    assert.equal(open.pingInterval, 300);

    // Alive: a poll gets the server's ping.
    const poll = await fetch(`${base}&sid=${encodeURIComponent(open.sid)}`);
    assert.equal(poll.status, 200);
    assert.match(await poll.text(), /2/);

    // Now silent: no pong, no poll. The timeout itself is what is tested, so
    // wait it out once; then the session must be gone (checked until WAIT,
    // without ever answering a ping).
    await sleep(open.pingInterval + open.pingTimeout);
    const gone = await eventually(
      async () => {
        const response = await fetch(`${base}&sid=${encodeURIComponent(open.sid)}`);
        const body = await response.text();
        return response.status === 400 ? body : false;
      },
      WAIT,
      "the polling session to be dropped",
    );
    assert.deepEqual(JSON.parse(gone), { code: 1, message: "Session ID unknown" });
  } finally {
    await quick.dispose();
  }
});

test("CORS: polling from an allowed Origin gets credentials headers, another Origin 403", async () => {
  const allowed = "http://allowed.example";
  const strict = new Herald({ config: { server: { allowed_origins: [allowed] } } });
  const own = new Clients();
  await strict.start();
  try {
    const base = `${strict.url}/socket.io/?EIO=4&transport=polling`;

    const ok = await fetch(base, { headers: { Origin: allowed } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), allowed);
    assert.equal(ok.headers.get("access-control-allow-credentials"), "true");
    const open = JSON.parse((await ok.text()).slice(1));

    // The POST of that session too.
    const post = await fetch(`${base}&sid=${encodeURIComponent(open.sid)}`, {
      method: "POST",
      headers: { Origin: allowed, "Content-Type": "text/plain;charset=UTF-8" },
      body: `40${JSON.stringify({ token: strict.token("alice") })}`,
    });
    assert.equal(post.status, 200);
    assert.equal(post.headers.get("access-control-allow-origin"), allowed);
    assert.equal(post.headers.get("access-control-allow-credentials"), "true");
    await post.text();

    const denied = await fetch(base, { headers: { Origin: "http://evil.example" } });
    assert.equal(denied.status, 403);
    await denied.text();

    // Case is ignored in the match, as for /ws.
    const upper = await fetch(base, { headers: { Origin: "http://ALLOWED.example" } });
    assert.equal(upper.status, 200);
    await upper.text();

    // Without Origin (not a browser): allowed.
    const none = await fetch(base);
    assert.equal(none.status, 200);
    await none.text();

    // The WebSocket transport is held to the same list.
    const status = await new Promise((done, fail) => {
      const ws = new WebSocket(`${strict.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`, {
        origin: "http://evil.example",
      });
      ws.on("unexpected-response", (_req, res) => {
        done(res.statusCode);
        ws.terminate();
      });
      ws.on("open", () => {
        ws.terminate();
        fail(new Error("the upgrade from a disallowed Origin was accepted"));
      });
      ws.on("error", () => {});
    });
    assert.equal(status, 403);

    // And the official client from the allowed Origin works end to end over polling.
    const socket = own.sio(strict, { transports: ["polling"], extraHeaders: { Origin: allowed }, auth: { token: strict.token("bob") } });
    await connected(socket);
    const room = uniqueRoom();
    await ack(socket, "join", { room });
    await strict.publish(room, "hi");
    await waitEvent(socket, "message", (m) => m.room === room);
  } finally {
    own.closeAll();
    await strict.dispose();
  }
});

test("heartbeats: a client that answers pings stays connected over many ping intervals, on both transports", async () => {
  const quick = new Herald({ config: { heartbeat: { interval_ms: 300, timeout_ms: 900 } } });
  const own = new Clients();
  await quick.start();
  try {
    for (const transport of ["websocket", "polling"]) {
      const socket = own.sio(quick, { transports: [transport], auth: { token: quick.token("alice") } });
      let pings = 0;
      const disconnects = [];
      socket.io.on("ping", () => pings++);
      socket.on("disconnect", (reason) => disconnects.push(reason));
      await connected(socket);
      const room = uniqueRoom();
      await ack(socket, "join", { room });
      await eventually(() => pings >= 6, WAIT, `6 pings over ${transport}`);
      assert.deepEqual(disconnects, [], transport);
      assert.ok(socket.connected, transport);
      // Still in its room, still served.
      await quick.publish(room, "still here");
      await waitEvent(socket, "message", (m) => m.room === room);
    }
  } finally {
    own.closeAll();
    await quick.dispose();
  }
});

test("socketio.enabled = false: no /socket.io/", async () => {
  const off = new Herald({ config: { socketio: { enabled: false } } });
  const own = new Clients();
  await off.start();
  try {
    const response = await fetch(`${off.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(response.status, 404);
    await response.text();
    const socket = own.sio(off, { transports: ["polling"], auth: { token: off.token("alice") }, reconnection: false });
    await assert.rejects(connected(socket));
    // Native WebSockets are unaffected.
    const native = await own.native(off, "alice");
    assert.equal(native.welcome.user, "alice");
  } finally {
    own.closeAll();
    await off.dispose();
  }
});
