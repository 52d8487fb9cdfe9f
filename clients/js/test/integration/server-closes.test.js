// How the client takes the ways a real Herald ends a connection: 4008 for a
// slow consumer (reconnect, rejoin), and a restart (1001, then a new epoch:
// the rejoin cannot recover, and the room says "reset").

import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually, recordingWebSocket } from "./herald.js";

// A small outbound queue (256 KiB), so a client that stops reading is a slow
// consumer soon after the kernel's socket buffers are full; history long
// enough to replay everything it missed.
const { herald, clients } = heraldForFile({
  env: { HERALD_LIMITS__OUTBOUND_QUEUE_BYTES: "262144" },
  extraToml: `
[history]
size = 1000
`,
});

async function client(user) {
  const WebSocket = await recordingWebSocket();
  const c = new HeraldClient(herald.wsUrl, {
    WebSocket,
    getToken: () => herald.token(user),
    reconnect: { baseMs: 100, maxMs: 400 },
  });
  clients.push(c);
  return { client: c, WebSocket };
}

test("a slow consumer closed with 4008 reconnects and rejoins its room with since", { timeout: 30000 }, async () => {
  const { client: eve, WebSocket } = await client("eve");
  await eve.connect();
  const room = eve.room("ticker:slow");
  await room.join();
  const joined = [];
  room.on("joined", (f) => joined.push(f));
  const disconnects = [];
  eve.on("disconnected", (d) => disconnects.push(d));

  // Stop reading: the `ws` socket's TCP stream is paused, as a busy tab's would stall.
  const tcp = WebSocket.sockets[0]._socket;
  tcp.pause();
  // 60 KB messages until the kernel buffers and the outbound queue overflow,
  // and the server counts eve out of the room.
  const big = "x".repeat(60000);
  let published = 0;
  for (let round = 0; round < 60; round++) {
    await Promise.all(Array.from({ length: 10 }, () => herald.publish("ticker:slow", { big }).then(() => published++)));
    const presence = await herald.presence("ticker:slow");
    if (!presence.users.includes("eve")) break;
  }
  assert.ok(!(await herald.presence("ticker:slow")).users.includes("eve"), `still a member after ${published} messages`);
  // Read again within the server's 2 s grace: what was queued, then the close frame.
  tcp.resume();

  await eventually(() => joined.length === 1 && eve.state === "connected", 10000, "the rejoin");
  assert.equal(disconnects.length, 1);
  assert.equal(disconnects[0].code, 4008, `closed with ${JSON.stringify(disconnects[0])}`);
  assert.equal(disconnects[0].reason, "slow consumer");
  assert.equal(WebSocket.sockets.length, 2, "exactly one reconnect");
  // The rejoin asked for what was missed: recovered, since history holds them all.
  assert.equal(joined[0].recovered, true);
  await eventually(() => room.seq === published, 10000, `every message (seq ${room.seq} of ${published})`);
});

test("a server restart: 1001, reconnect, and a reset since the epoch changed", { timeout: 30000 }, async () => {
  const { client: frank } = await client("frank");
  await frank.connect();
  const room = frank.room("chat:restart");
  await room.join();
  const messages = [];
  const resets = [];
  const gaps = [];
  room.on("message", (f) => messages.push(f.seq));
  room.on("reset", (r) => resets.push(r));
  room.on("gap", (g) => gaps.push(g));
  const disconnects = [];
  frank.on("disconnected", (d) => disconnects.push(d));

  for (let i = 0; i < 3; i++) await herald.publish("chat:restart", { i });
  await eventually(() => room.seq === 3, 3000, "three messages");
  const epoch = room.epoch;
  const node = frank.conn;

  await herald.stop();
  await herald.start(); // same port, new process: every room numbered from 1 in a new epoch

  await eventually(() => resets.length === 1, 15000, "the reset");
  assert.equal(disconnects[0].code, 1001);
  assert.equal(disconnects[0].reason, "server shutting down");
  assert.notEqual(frank.conn, node);
  assert.notEqual(room.epoch, epoch);
  assert.deepEqual(resets[0], { room: "chat:restart", seq: 0, epoch: room.epoch });
  assert.equal(room.seq, 0);
  assert.ok(room.joined);

  // Numbering starts over; the client follows it without reporting a gap.
  await herald.publish("chat:restart", { after: true });
  await eventually(() => messages.length === 4, 3000, "the message after the restart");
  assert.deepEqual(messages, [1, 2, 3, 1]);
  assert.deepEqual(gaps, []);
});
