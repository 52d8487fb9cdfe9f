// The chat page: a name, rooms, messages, who is online and who is typing,
// the connection's state, and a button that drops the socket to show that
// coming back recovers what was missed. Everything it does goes through
// Herald's JavaScript client, served by Herald itself at /demo/client/.
import { HeraldClient } from "/demo/client/index.js";

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

// The latest socket the client opened, so the page can drop it; while
// `holding`, new sockets go nowhere, as on a train in a tunnel.
let current = null;
let holding = false;
class DroppableSocket extends WebSocket {
  constructor(url, protocols) {
    super(holding ? "ws://127.0.0.1:9/" : url, protocols);
    current = this;
  }
}

let client = null;
const rooms = new Map(); // name -> { room, messages: [], unread, typing: Map(user -> timer) }
let shown = null;
let droppedAt = null;

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (client) return; // one sign-in per page
  const name = $("name").value.trim();
  client = new HeraldClient(wsUrl, { getToken: () => token(name), WebSocket: DroppableSocket });
  client.on("state", showState);
  client.on("authError", ({ code, reason }) => notice(`not signed in: ${code} ${reason}`));
  client.on("error", (error) => notice(error.message));
  showState(client.state);
  try {
    await client.connect();
  } catch (error) {
    notice(`could not connect: ${error.message}`);
    client.close();
    client = null;
    return;
  }
  $("me").textContent = `signed in as ${client.user}`;
  $("login").hidden = true;
  $("chat").hidden = false;
  $("drop").disabled = false;
  await join("lobby");
});

async function token(name) {
  const reply = await fetch("/demo/token", { method: "POST", body: JSON.stringify({ name }) });
  if (!reply.ok) throw new Error((await reply.json()).error);
  return (await reply.json()).token;
}

function showState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  if (state === "connected" && droppedAt !== null) {
    droppedAt = null;
    notice("back online: what was missed follows, marked recovered");
  }
}

$("drop").addEventListener("click", () => {
  holding = true;
  droppedAt = Date.now();
  current?.close();
  $("drop").hidden = true;
  $("back").hidden = false;
  notice("connection dropped");
});

$("back").addEventListener("click", () => {
  holding = false;
  $("drop").hidden = false;
  $("back").hidden = true;
  // As a browser does when the network returns: the client reconnects now.
  window.dispatchEvent(new Event("online"));
});

$("join").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await join($("room-name").value.trim())) $("room-name").value = "";
});

/** Joins `name` (once) and shows it; false, with a notice, when refused. */
async function join(name) {
  if (!rooms.has(name)) {
    const room = client.room(name);
    const entry = { room, messages: [], unread: 0, typing: new Map() };
    // A message replayed after a rejoin is one this page missed while away.
    const offs = [
      room.on("message", (frame, { replayed }) => {
        add(entry, { from: frame.from, text: textOf(frame.data), seq: frame.seq, recovered: replayed });
      }),
      room.on("user_joined", () => show(name, "users")),
      room.on("user_left", () => show(name, "users")),
      room.on("joined", () => show(name, "users")),
      room.on("reset", () => add(entry, { notice: "the server could not recover what was missed; showing from now" })),
      room.on("gap", ({ from, to }) => add(entry, { notice: `messages ${from}–${to} were skipped` })),
      room.on("typing", ({ user, typing }) => typingOf(entry, user, typing)),
    ];
    try {
      await room.join();
    } catch (error) {
      for (const off of offs) off();
      notice(`could not join ${name}: ${error.code ?? ""} ${error.message}`);
      return false;
    }
    rooms.set(name, entry);
  }
  shown = name;
  renderRooms();
  show(name, "all");
  return true;
}

function textOf(data) {
  return typeof data === "object" && data !== null && "text" in data ? String(data.text) : JSON.stringify(data);
}

function add(entry, item) {
  entry.messages.push(item);
  if (entry.room.name === shown) renderMessage(item);
  else {
    entry.unread += 1;
    renderRooms();
  }
}

function typingOf(entry, user, typing) {
  clearTimeout(entry.typing.get(user));
  if (typing) entry.typing.set(user, setTimeout(() => typingOf(entry, user, false), 6000));
  else entry.typing.delete(user);
  if (entry.room.name === shown) show(shown, "typing");
}

function renderRooms() {
  $("rooms").replaceChildren(...[...rooms].map(([name, entry]) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = name;
    button.setAttribute("aria-current", String(name === shown));
    if (entry.unread) {
      const unread = document.createElement("span");
      unread.className = "unread";
      unread.textContent = entry.unread;
      button.append(unread);
    }
    button.addEventListener("click", () => {
      shown = name;
      entry.unread = 0;
      renderRooms();
      show(name, "all");
    });
    item.append(button);
    return item;
  }));
}

function renderMessage(item) {
  const line = document.createElement("li");
  if (item.notice) {
    line.className = "notice";
    line.textContent = item.notice;
  } else {
    if (item.recovered) line.className = "recovered";
    line.dataset.seq = item.seq;
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = item.from;
    line.append(from, document.createTextNode(item.text));
  }
  $("messages").append(line);
  $("messages").scrollTop = $("messages").scrollHeight;
}

function notice(text) {
  const entry = rooms.get(shown);
  if (entry) add(entry, { notice: text });
  else $("problem").textContent = text;
}

function show(name, what) {
  if (name !== shown) return;
  const entry = rooms.get(name);
  if (what === "all") {
    $("room-title").textContent = name;
    $("messages").replaceChildren();
    entry.messages.forEach(renderMessage);
    $("text").disabled = false;
    $("send").querySelector("button").disabled = false;
  }
  const users = [...entry.room.users].sort();
  $("users").replaceChildren(...users.map((user) => {
    const item = document.createElement("li");
    item.textContent = user === client.user ? `${user} (you)` : user;
    return item;
  }));
  $("count").textContent = `(${entry.room.count})`;
  const typing = [...entry.typing.keys()].filter((user) => user !== client.user);
  $("typing").textContent = typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : "";
}

$("text").addEventListener("input", () => rooms.get(shown)?.room.startTyping());

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text || !shown) return;
  $("text").value = "";
  const room = rooms.get(shown).room;
  room.stopTyping();
  try {
    await room.publish({ text });
  } catch (error) {
    // Not sent (or not known to be): give the text back to try again.
    if (!$("text").value) $("text").value = text;
    notice(`not sent: ${error.code ?? ""} ${error.message}`);
  }
});

// For the browser test: the client, the rooms, and the page's own hooks.
window.demo = { get client() { return client; }, rooms };
