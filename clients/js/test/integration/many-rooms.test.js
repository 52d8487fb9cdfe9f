// A client in more rooms than the server lets a connection join at once:
// after a reconnect it joins them again at a pace the rate limit allows,
// instead of being closed for a run of refused frames (1008) and looping.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { HeraldClient } from "../../src/index.js";
import { heraldForFile, eventually, sleep } from "./herald.js";

// Herald's own defaults for the burst and the strikes; a rate a test can wait for.
const { herald, clients } = heraldForFile({
  env: { HERALD_LIMITS__RATE_PER_SEC: "40", HERALD_LIMITS__RATE_BURST: "20", HERALD_LIMITS__RATE_STRIKES: "20" },
});

test("45 rooms are joined again after a reconnect, without tripping the rate limit", { timeout: 30000 }, async () => {
  const client = new HeraldClient(herald.wsUrl, {
    WebSocket,
    getToken: () => herald.token("alice"),
    reconnect: { baseMs: 200, maxMs: 200, random: () => 0.5 },
  });
  clients.push(client);
  const closes = [];
  client.on("disconnected", ({ code }) => closes.push(code));
  await client.connect();
  const rooms = [];
  for (let i = 0; i < 45; i++) {
    const room = client.room(`many:${i}`);
    await room.join();
    rooms.push(room);
    await sleep(30); // the application's own joins keep under the rate too
  }
  await sleep(600); // a full bucket again

  await herald.crashConnection(client.conn);
  await eventually(() => closes.length >= 1, 5000, "the crash");
  await eventually(() => rooms.every((room) => room.joined), 20000, "every room joined again");
  assert.deepEqual(closes, [1011], "closed once, by the crash: never for the rate limit");

  const last = rooms.at(-1);
  const got = new Promise((done) => last.once("message", (frame) => done(frame)));
  const { seq } = await herald.publish(last.name, { after: "rejoin" });
  assert.equal((await got).seq, seq);
});
