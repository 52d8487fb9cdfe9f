// The official Socket.IO browser bundle (socket.io-client's
// dist/socket.io.min.js) in real Chromium, against a real Herald: a page on
// Herald's own origin connects at /socket.io/, joins a room, and receives
// what the server API publishes, over polling and then, after the upgrade,
// over WebSocket; and with polling only.
//
// Needs Debian's Chromium at /usr/bin/chromium (CHROMIUM overrides) and the
// herald binary (HERALD_BIN, default target/debug/herald).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { launchChromium, startHerald, WAIT } from "./setup.js";

const bundle = join(dirname(createRequire(import.meta.url).resolve("socket.io-client/package.json")), "dist", "socket.io.min.js");
const secret = randomBytes(16).toString("hex");
const apiKey = randomBytes(16).toString("hex");

let herald;
let base;
let browser;

/** An HS256 JWT for `sub`, valid for ten minutes. */
function token(sub) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** `POST /api/publish`; resolves with the message's seq. */
async function publish(room, data) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ room, data }),
  });
  const body = await response.text();
  assert.equal(response.status, 200, body);
  return JSON.parse(body).seq;
}

before(async () => {
  herald = await startHerald(
    "browser-sio",
    `[auth]\nrequired = true\njwt_secret = "${secret}"\n[api]\nkey = "${apiKey}"\n` +
      `[heartbeat]\ninterval_ms = 1000\ntimeout_ms = 5000\n` +
      `[limits]\nrate_per_sec = 1000\nrate_burst = 1000\n[log]\nlevel = "warn"\n`,
  );
  base = herald.base;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  herald?.stop();
});

/**
 * A page on Herald's own origin (its /healthz) with the official bundle loaded, its
 * socket connected with `transports` and joined to `room`. In the page,
 * `window.received` holds every `message` event's frame and
 * `window.over` the transport each came over.
 */
async function pageIn(room, user, transports) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  // A page Herald itself serves, so the page's origin (and address space)
  // is Herald's: Chromium blocks a page fulfilled by `page.route` (an
  // unknown, so public, address) from opening a WebSocket to 127.0.0.1
  // (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS).
  await page.goto(`${base}/healthz`);
  await page.addScriptTag({ path: bundle });
  const joined = await page.evaluate(
    ({ room, token, transports }) =>
      new Promise((resolveJoin, reject) => {
        window.received = [];
        window.over = [];
        // No URL: the page's own origin, path /socket.io/.
        const socket = io({ auth: { token }, transports, reconnection: false });
        window.socket = socket;
        socket.on("message", (frame) => {
          window.received.push(frame);
          window.over.push(socket.io.engine.transport.name);
        });
        socket.on("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
        socket.on("connect", () => socket.emit("join", { room }, resolveJoin));
      }),
    { room, token: token(user), transports },
  );
  return { page, joined, errors };
}

const until = (page, what, arg) => page.waitForFunction(what, arg, { timeout: WAIT });
const transportOf = (page) => page.evaluate(() => window.socket.io.engine.transport.name);

test("the browser bundle: polling first, the upgrade to WebSocket, and messages before and after it", async () => {
  const room = `browser-upgrade-${randomBytes(3).toString("hex")}`;
  const { page, joined, errors } = await pageIn(room, "alice", ["polling", "websocket"]);
  try {
    assert.equal(joined.type, "joined");
    assert.equal(joined.room, room);
    assert.deepEqual(joined.users, ["alice"]);

    assert.equal(await publish(room, "one"), 1);
    assert.equal(await publish(room, "two"), 2);
    await until(page, (n) => window.received.length >= n, 2);

    await until(page, () => window.socket.io.engine.transport.name === "websocket" && !window.socket.io.engine.upgrading);

    assert.equal(await publish(room, "three"), 3);
    // And from the page itself, acknowledged with the native reply.
    const reply = await page.evaluate(
      (room) => new Promise((r) => window.socket.emit("publish", { room, data: "four" }, r)),
      room,
    );
    assert.equal(reply.type, "ack");
    assert.equal(reply.seq, 4);
    await until(page, (n) => window.received.length >= n, 4);

    const received = await page.evaluate(() => window.received);
    assert.deepEqual(
      received.map((m) => [m.type, m.room, m.seq, m.data]),
      [
        ["message", room, 1, "one"],
        ["message", room, 2, "two"],
        ["message", room, 3, "three"],
        ["message", room, 4, "four"],
      ],
    );
    assert.equal(received[3].from, "alice");
    const over = await page.evaluate(() => window.over);
    assert.deepEqual(over.slice(2), ["websocket", "websocket"], `after the upgrade: ${over}`);
    assert.equal(await transportOf(page), "websocket");
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test("the browser bundle with polling only", async () => {
  const room = `browser-polling-${randomBytes(3).toString("hex")}`;
  const { page, joined, errors } = await pageIn(room, "bob", ["polling"]);
  try {
    assert.equal(joined.type, "joined");
    for (let i = 1; i <= 3; i++) {
      assert.equal(await publish(room, `api ${i}`), i);
      await until(page, (n) => window.received.length >= n, i);
    }
    const reply = await page.evaluate(
      (room) => new Promise((r) => window.socket.emit("publish", { room, data: "from the page" }, r)),
      room,
    );
    assert.equal(reply.seq, 4);
    await until(page, (n) => window.received.length >= n, 4);
    const received = await page.evaluate(() => window.received);
    assert.deepEqual(
      received.map((m) => [m.seq, m.data]),
      [
        [1, "api 1"],
        [2, "api 2"],
        [3, "api 3"],
        [4, "from the page"],
      ],
    );
    assert.equal(received[3].from, "bob");
    assert.deepEqual(await page.evaluate(() => window.over), ["polling", "polling", "polling", "polling"]);
    assert.equal(await transportOf(page), "polling");
    assert.deepEqual(errors, []);
  } finally {
    await page.evaluate(() => window.socket.disconnect());
    await page.close();
  }
});
