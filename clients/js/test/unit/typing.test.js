import assert from "node:assert/strict";
import { test } from "node:test";
import { HeraldClient } from "../../src/index.js";
import { fakeOptions, fakeWebSocket, sleep } from "./fake-socket.js";

async function joinedRoom(typing) {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket, { typing }));
  client.connect();
  const socket = FakeSocket.last();
  socket.welcome();
  const room = client.room("chat:1");
  const joined = room.join();
  socket.reply("join", { type: "joined", room: "chat:1", users: ["alice"], count: 1, seq: 0, epoch: "E" });
  await joined;
  // Play a server that acks every typing frame.
  const send = socket.send.bind(socket);
  socket.send = (text) => {
    send(text);
    const frame = JSON.parse(text);
    if (frame.type === "typing") setTimeout(() => socket.receive({ type: "ack", id: frame.id }), 0);
  };
  const typings = () => socket.ofType("typing").map((f) => f.typing);
  return { client, socket, room, typings };
}

test("startTyping sends true at most once per throttle window while called repeatedly", async () => {
  const { client, room, typings } = await joinedRoom({ throttleMs: 60, idleMs: 60000 });
  // Keystrokes within one window send one frame; the next window, one more.
  // (Waits only ever run long, which can only open a window, never close one.)
  for (let i = 0; i < 10; i++) room.startTyping();
  assert.deepEqual(typings(), [true]);
  await sleep(80);
  for (let i = 0; i < 10; i++) room.startTyping();
  assert.deepEqual(typings(), [true, true]);
  room.stopTyping();
  assert.equal(typings().at(-1), false);
  room.stopTyping(); // already stopped: nothing more
  assert.equal(typings().filter((t) => t === false).length, 1);
  client.close();
});

test("typing:false goes out by itself after idleMs without a call", async () => {
  const { client, room, typings } = await joinedRoom({ throttleMs: 1000, idleMs: 120 });
  room.startTyping();
  await sleep(60);
  room.startTyping(); // pushes the idle deadline to 120 ms from now
  assert.deepEqual(typings(), [true]);
  await sleep(70);
  assert.deepEqual(typings(), [true], "not yet: the second call restarted the idle timer");
  await sleep(150);
  assert.deepEqual(typings(), [true, false]);
  client.close();
});

test("typing() is fire and forget: true on ack, false when refused, never a rejection", async () => {
  const { client, socket, room } = await joinedRoom({});
  assert.equal(await room.typing(true), true);
  // A server that refuses the next frames instead.
  socket.send = (text) => {
    const frame = JSON.parse(text);
    setTimeout(() => socket.receive({ type: "error", code: "RATE_LIMITED", message: "slow down", id: frame.id }), 0);
  };
  assert.equal(await room.typing(false), false);
  client.close();
  assert.equal(await room.typing(true), false);
});

test("startTyping does nothing in a room not joined", async () => {
  const FakeSocket = fakeWebSocket();
  const client = new HeraldClient("ws://herald.test/ws", fakeOptions(FakeSocket));
  client.connect();
  FakeSocket.last().welcome();
  client.room("elsewhere").startTyping();
  assert.equal(FakeSocket.last().ofType("typing").length, 0);
  client.close();
});
