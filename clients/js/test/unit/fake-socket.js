// A WebSocket stand-in for unit tests: records what the client sends and lets
// a test play the server (open, frames, close codes) one step at a time.

export function fakeWebSocket() {
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      this.terminated = false;
      FakeSocket.instances.push(this);
    }

    // ---- what the client calls ----
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      if (this.readyState >= 2) return;
      this.closedByClient = { code, reason };
      this.readyState = 2;
      // As a real socket: the close event comes later, once the handshake ends.
      setTimeout(() => {
        this.readyState = 3;
        this.onclose?.({ code: code ?? 1005, reason: reason ?? "" });
      }, 0);
    }

    terminate() {
      this.terminated = true;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 0);
    }

    // ---- what the test calls, as the server ----
    get token() {
      return new URL(this.url).searchParams.get("token");
    }

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    /** Opens and sends `welcome` (user alice, heartbeat off unless given). */
    welcome(fields = {}) {
      if (this.readyState === 0) this.open();
      this.receive({ type: "welcome", conn: `n-${FakeSocket.instances.indexOf(this) + 1}`, user: "alice", node: "n", heartbeat_ms: 0, ...fields });
    }

    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }

    /** Answers the last frame of `type` the client sent, echoing its id. */
    reply(type, fields) {
      const frame = this.last(type);
      if (!frame) throw new Error(`the client sent no ${type}`);
      this.receive({ ...fields, id: frame.id });
      return frame;
    }

    last(type) {
      return this.sent.filter((f) => f.type === type).at(-1);
    }

    ofType(type) {
      return this.sent.filter((f) => f.type === type);
    }

    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  FakeSocket.instances = [];
  FakeSocket.last = () => FakeSocket.instances.at(-1);
  return FakeSocket;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `cond()` is true, checking every few ms, for at most `ms`. */
export async function eventually(cond, ms = 2000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Options for a client on a fake socket: fast reconnects, no network events. */
export function fakeOptions(FakeSocket, extra = {}) {
  return {
    WebSocket: FakeSocket,
    token: "t0",
    reconnect: { baseMs: 5, maxMs: 20 },
    network: null,
    ...extra,
  };
}

/** The socket the client opens after `previous`. */
export async function nextSocket(FakeSocket, previous, ms = 1000) {
  await eventually(() => FakeSocket.last() !== previous, ms, "a new socket");
  return FakeSocket.last();
}
