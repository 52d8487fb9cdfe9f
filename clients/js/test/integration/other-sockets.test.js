// The client on other WebSockets than the `ws` package, and on a link that
// stops delivering without closing.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually, recordingWebSocket } from "./herald.js";

const { herald, clients } = heraldForFile();

// Node 22 has a global WebSocket; Node 20.10 to 21 behind a flag; Node 18 none.
const [major, minor] = process.versions.node.split(".").map(Number);
const hasGlobal = typeof globalThis.WebSocket === "function";
const flagged = major > 20 || (major === 20 && minor >= 10);

test("Node's global WebSocket, as a browser would use the client (served src/herald-client.js)", { timeout: 15000, skip: !hasGlobal && !flagged && "this Node has no WebSocket" }, async () => {
  const flags = hasGlobal ? [] : ["--experimental-websocket"];
  const script = fileURLToPath(new URL("./fixtures/global-websocket.mjs", import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [...flags, script], {
    timeout: 10000,
    env: {
      ...process.env,
      HERALD_CLIENT_MODULE: pathToFileURL(fileURLToPath(new URL("../../src/herald-client.js", import.meta.url))).href,
      HERALD_URL: herald.wsUrl,
      HERALD_TOKEN: herald.token("grace"),
    },
  });
  const seen = JSON.parse(stdout.trim().split("\n").at(-1));
  assert.deepEqual(seen, { user: "grace", seq: 1, message: { seq: 1, data: { via: "global WebSocket" } }, state: "closed" });
});

test("a link that stops delivering is found by the ping probe, dropped, and recovered", { timeout: 20000 }, async () => {
  const WebSocket = await recordingWebSocket();
  const heidi = new HeraldClient(herald.wsUrl, {
    WebSocket,
    getToken: () => herald.token("heidi"),
    reconnect: { baseMs: 100, maxMs: 100 },
    // Probe after heartbeat_ms (1 s here) + 200 ms of silence; give up 300 ms later.
    heartbeat: { marginMs: 200, probeTimeoutMs: 300 },
  });
  clients.push(heidi);
  await heidi.connect();
  const room = heidi.room("chat:halfopen");
  const seqs = [];
  room.on("message", (f) => seqs.push(f.seq));
  await room.join();
  await herald.publish("chat:halfopen", 1);
  await eventually(() => seqs.length === 1, 3000, "the first message");
  const disconnects = [];
  heidi.on("disconnected", (d) => disconnects.push(d));

  // Nothing reaches the client any more (not even the server's pings), yet
  // the TCP connection stays open: what a dead NAT mapping looks like.
  const started = Date.now();
  WebSocket.sockets[0]._socket.pause();
  await herald.publish("chat:halfopen", 2);
  await eventually(() => disconnects.length === 1, 5000, "the half-open link to be dropped");
  const took = Date.now() - started;
  assert.equal(disconnects[0].reason, "no answer to ping");
  assert.ok(took >= 1000, `dropped after ${took} ms, before a heartbeat interval of silence`);
  assert.ok(WebSocket.sockets[0].readyState >= 2, "the old socket was closed");

  await eventually(() => heidi.state === "connected" && room.joined, 5000, "the reconnect");
  await herald.publish("chat:halfopen", 3);
  await eventually(() => seqs.length === 3, 3000, "the missed message and the next");
  assert.deepEqual(seqs, [1, 2, 3]);
});
