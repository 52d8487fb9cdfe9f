// Who a Socket.IO client is: the token from the CONNECT packet's `auth`,
// else the Authorization header, else `?token=`; a bad or missing one is a
// CONNECT_ERROR the official client reports as `connect_error`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Herald, Clients, ack, connected, heraldForFile, mintToken, refused, uniqueRoom, waitEvent } from "./herald.js";

const { herald, clients } = heraldForFile();

/** The user a connected socket publishes as. */
async function whoAmI(socket) {
  const room = uniqueRoom("whoami");
  assert.equal((await ack(socket, "join", { room })).type, "joined");
  assert.equal((await ack(socket, "publish", { room, data: "me" })).type, "ack");
  return (await waitEvent(socket, "message", (m) => m.room === room)).from;
}

for (const transport of ["websocket", "polling"]) {
  const transports = [transport];

  test(`${transport}: a token in the CONNECT packet's auth`, async () => {
    const socket = clients.sio(herald, { transports, auth: { token: herald.token("alice") } });
    await connected(socket);
    assert.equal(await whoAmI(socket), "alice");
  });

  test(`${transport}: a token in the Authorization header`, async () => {
    const socket = clients.sio(herald, { transports, extraHeaders: { Authorization: `Bearer ${herald.token("bob")}` } });
    await connected(socket);
    assert.equal(await whoAmI(socket), "bob");
  });

  test(`${transport}: a token in the query`, async () => {
    const socket = clients.sio(herald, { transports, query: { token: herald.token("carol") } });
    await connected(socket);
    assert.equal(await whoAmI(socket), "carol");
  });

  test(`${transport}: a bad token is connect_error "invalid token"`, async () => {
    const wrongSecret = mintToken("not the secret", "mallory");
    const expired = herald.token("alice", { exp: Math.floor(Date.now() / 1000) - 60 });
    for (const opts of [
      { auth: { token: wrongSecret } },
      { auth: { token: "not a jwt" } },
      { auth: { token: expired } },
      { auth: { token: herald.token("anon:7") } },
      { extraHeaders: { Authorization: `Bearer ${wrongSecret}` } },
      { query: { token: wrongSecret } },
    ]) {
      const socket = clients.sio(herald, { transports, ...opts });
      const err = await refused(socket);
      assert.equal(err.message, "invalid token", JSON.stringify(opts));
      assert.equal(socket.connected, false);
    }
  });

  test(`${transport}: no token is connect_error "not authenticated"`, async () => {
    const socket = clients.sio(herald, { transports });
    const err = await refused(socket);
    assert.equal(err.message, "not authenticated");
  });
}

test("the auth token comes first, then the header, then the query", async () => {
  const bad = mintToken("not the secret", "mallory");

  const authOverHeader = clients.sio(herald, {
    auth: { token: herald.token("alice") },
    extraHeaders: { Authorization: `Bearer ${bad}` },
    query: { token: bad },
  });
  await connected(authOverHeader);
  assert.equal(await whoAmI(authOverHeader), "alice");

  const headerOverQuery = clients.sio(herald, {
    extraHeaders: { Authorization: `Bearer ${herald.token("bob")}` },
    query: { token: bad },
  });
  await connected(headerOverQuery);
  assert.equal(await whoAmI(headerOverQuery), "bob");

  // The highest-precedence token present is the token, even when a lower one is good.
  const badAuth = clients.sio(herald, { auth: { token: bad }, query: { token: herald.token("carol") } });
  assert.equal((await refused(badAuth)).message, "invalid token");
});

test("a refused client can connect again with a good token", async () => {
  const socket = clients.sio(herald, { auth: { token: "nope" } });
  assert.equal((await refused(socket)).message, "invalid token");
  socket.auth = { token: herald.token("dave") };
  socket.connect();
  await connected(socket);
  assert.equal(await whoAmI(socket), "dave");
});

test("rooms claims apply to Socket.IO joins", async () => {
  const socket = clients.sio(herald, { auth: { token: herald.token("erin", { rooms: ["chat:*"] }) } });
  await connected(socket);
  assert.equal((await ack(socket, "join", { room: "chat:one" })).type, "joined");
  const refusedJoin = await ack(socket, "join", { room: "lobby" });
  assert.equal(refusedJoin.code, "FORBIDDEN");
  assert.equal((await ack(socket, "join", { room: "user:erin" })).type, "joined");
});

test("with auth.required = false, a client without a token is anon:<conn>", async () => {
  const open = new Herald({ config: { auth: { required: false } } });
  const own = new Clients();
  await open.start();
  try {
    for (const transport of ["websocket", "polling"]) {
      const socket = own.sio(open, { transports: [transport] });
      await connected(socket);
      const me = await whoAmI(socket);
      assert.match(me, /^anon:/, transport);
    }
    // A token still names the user, and a bad one is still refused.
    const alice = own.sio(open, { auth: { token: open.token("alice") } });
    await connected(alice);
    assert.equal(await whoAmI(alice), "alice");
    const bad = own.sio(open, { auth: { token: "garbage" } });
    assert.equal((await refused(bad)).message, "invalid token");
  } finally {
    own.closeAll();
    await open.dispose();
  }
});

test("a namespace other than / is refused with Invalid namespace", async () => {
  const socket = clients.sio({ url: `${herald.url}/admin` }, { auth: { token: herald.token("alice") } });
  assert.equal((await refused(socket)).message, "Invalid namespace");
});
