// HeraldClient: one logical connection to a Herald server, kept alive across
// network losses, server restarts and deploys.
//
// The client owns at most one WebSocket at a time. Its life:
//
//   disconnected ──connect()──▶ connecting ──welcome──▶ connected
//        ▲                          │                       │
//        └──── backoff timer ◀──────┴──── socket closes ◀───┘
//
//   any state ──close(), or close 4001/4002/4003──▶ closed
//
// Herald keeps nothing for a connection once it has ended (PROTOCOL.md,
// "Reconnecting"), so everything a connection had is rebuilt by the client:
// a fresh token from `getToken`, then every joined room joined again with
// `since` and `epoch` so the server replays what was missed, then the
// requests that waited for the connection.
//
// Room frames are handled synchronously, frame by frame, before any reply
// promise settles: several frames can arrive in one read (a `joined` and the
// replay behind it), and a promise continuation would run after all of them.

import { Backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ClientCodes, HeraldError } from "./errors.js";
import { Requests } from "./requests.js";
import { Room, ROOM_FRAME_TYPES } from "./room.js";
import { Watchdog } from "./watchdog.js";
import { OPEN, abandon, attach, closeQuietly, decode, defaultNetwork, detach, noop, socketUrl } from "./socket.js";

/** Rejoins sent at once after a reconnect (see `HeraldClient#_rejoinAll`). */
const REJOIN_IN_FLIGHT = 8;
/** How long the rejoins wait after the server said to slow down. */
const REJOIN_PAUSE_MS = 1000;

/** Close codes after which reconnecting cannot help: the token or the client is at fault. */
export const AUTH_CLOSE_CODES = Object.freeze([4001, 4002, 4003]);

export class HeraldClient extends Emitter {
  /**
   * @param {string} url the server's `/ws` endpoint (`ws://`, `wss://`, `http(s)://`,
   *   or in a browser a path such as `/ws`)
   * @param {import("../index.js").HeraldClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket implementation: pass one as options.WebSocket (in Node 20: `import WebSocket from \"ws\"`)",
      );
    }
    this.url = String(url);
    socketUrl(this.url); // a malformed URL is a programming error: say so now, not on every retry
    this._token = options.token;
    this._getToken = options.getToken;
    if (this._getToken !== undefined && typeof this._getToken !== "function") {
      throw new TypeError("getToken must be a function returning a token or a promise of one");
    }

    const reconnect = options.reconnect ?? {};
    this._reconnectEnabled = options.reconnect !== false;
    this._backoff = new Backoff({ baseMs: reconnect.baseMs, maxMs: reconnect.maxMs, random: reconnect.random });
    // How long a connection must last before the backoff starts again from its
    // first, shortest window. Resetting at the welcome would let a server that
    // accepts and then drops every connection be hammered twice a second.
    this._stableMs = reconnect.resetAfterMs ?? 5000;

    this._heartbeatOptions = options.heartbeat ?? {};
    // An attempt that has not been welcomed by then (a token provider that
    // hangs, a connect that goes nowhere) is given up and tried again later.
    this._connectTimeoutMs = options.connectTimeoutMs ?? 15000;
    this.typingOptions = { throttleMs: 3000, idleMs: 5000, ...options.typing };

    this._requests = new Requests({
      send: (frame) => this._send(frame),
      isReady: () => this.state === "connected",
      isClosed: () => this.state === "closed",
      timeoutMs: options.requestTimeoutMs ?? 10000,
      maxPending: options.maxPending ?? 100,
      whileDisconnected: options.whileDisconnected ?? "wait",
    });

    /** @type {"connecting"|"connected"|"disconnected"|"closed"} */
    this.state = "disconnected";
    this.user = null;
    this.conn = null;
    this.node = null;
    this.heartbeatMs = null;

    this._rooms = new Map();
    this._socket = null;
    this._active = false; // between connect() and close() or an auth error
    this._gen = 0; // bumped whenever an attempt is abandoned, so late callbacks of old ones do nothing
    this._ready = null; // the promise connect() returned, until it settles
    this._welcome = null;
    this._reconnectTimer = undefined;
    this._stableTimer = undefined;
    this._watchdog = null;
    this._offline = false;
    this._network = options.network === undefined ? defaultNetwork() : options.network;
    this._onOnline = () => this._online();
    this._onOffline = () => this._offlineNow();
  }

  // ---- connection lifecycle -------------------------------------------

  /**
   * Starts connecting, and keeps the client connected until close().
   * Resolves with the `welcome` frame at the first connection; rejects with
   * a HeraldError (code "AUTH", with `.closeCode`) when the server refuses
   * the token, or (code "CLOSED") when close() comes first. Calling it while
   * waiting for a reconnect tries again at once.
   */
  connect() {
    if (this.state === "connected") return Promise.resolve(this._welcome);
    if (!this._ready) {
      let resolve, reject;
      const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
      // Marked handled: `client.connect()` without await must not turn a later
      // close() into an unhandled rejection. Awaiting it still sees the error.
      promise.catch(() => {});
      this._ready = { promise, resolve, reject };
    }
    const ready = this._ready.promise;
    if (!this._active) {
      this._active = true;
      this._backoff.reset();
      this._listenNetwork(true);
      this._open();
    } else if (this.state === "disconnected") {
      this._open();
    }
    return ready;
  }

  /**
   * Closes the connection for good: no reconnect, every unsettled request
   * rejected with code "CLOSED", rooms forgotten (a later connect() starts
   * with no room joined).
   */
  close() {
    if (this.state === "closed" && !this._active) return;
    this._shutdown(ClientCodes.CLOSED, "the client was closed", { code: 1000, reason: "" });
  }

  /** The room named `name`: the same object for the same name. */
  room(name) {
    let room = this._rooms.get(name);
    if (!room) {
      room = new Room(this, String(name));
      this._rooms.set(name, room);
    }
    return room;
  }

  /** Every room object made by room(), by name. */
  get rooms() {
    return this._rooms;
  }

  // ---- requests -------------------------------------------------------

  /**
   * Sends a frame with a fresh string `id` and resolves with its reply, or
   * rejects with a HeraldError: the server's `error` (its `code`, `.frame`),
   * "TIMEOUT", "CLOSED", "DISCONNECTED", "CONNECTION_LOST" or "TOO_MANY_PENDING".
   */
  request(frame, options) {
    return this._requests.request(frame, options);
  }

  /** A direct message to every connection of user `to`; resolves on the server's ack. */
  async direct(to, data, options) {
    await this.request({ type: "direct", to, data }, options);
  }

  /** Which of `users` are online: `{id: boolean}`. */
  async status(users, options) {
    const reply = await this.request({ type: "status", users: [...users] }, options);
    return { ...reply.online };
  }

  /** Who is in `room` (any room the user may join; no membership needed). */
  async presence(room, options) {
    const reply = await this.request({ type: "presence", room }, options);
    const users = Array.isArray(reply.users) ? reply.users : [];
    return { users, count: typeof reply.count === "number" ? reply.count : users.length };
  }

  /** An application-level ping; resolves with the round trip in milliseconds. */
  async ping(options) {
    const started = Date.now();
    await this.request({ type: "ping" }, options);
    return Date.now() - started;
  }

  // ---- one attempt ----------------------------------------------------

  async _open() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    const gen = ++this._gen;
    this._setState("connecting");
    this.emit("connecting");
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (gen === this._gen && this.state === "connecting") this._abandon("no welcome in time");
    }, this._connectTimeoutMs);

    let token = this._token;
    if (this._getToken) {
      try {
        // Before every attempt: a reconnect an hour later needs a token that
        // has not expired, and Herald checks `exp` only when a token is presented.
        token = await this._getToken();
      } catch (err) {
        if (gen !== this._gen) return;
        this.emit("error", wrap(err, "TOKEN", "getToken failed"));
        this._lost({ code: 1006, reason: "getToken failed" });
        return;
      }
      if (gen !== this._gen) return; // closed, or went offline, meanwhile
    }

    let socket;
    try {
      socket = new this._WebSocket(socketUrl(this.url, token));
    } catch (err) {
      // A constructor that throws refuses this URL outright; retrying repeats it.
      this.emit("error", wrap(err, "CONNECT", "the WebSocket could not be created"));
      this._shutdown(ClientCodes.CLOSED, `the WebSocket could not be created: ${err?.message ?? err}`);
      return;
    }
    this._socket = socket;
    attach(socket, {
      onMessage: (data) => this._socket === socket && this._receive(data),
      onClose: (code, reason) => this._socket === socket && this._closed(code, reason),
      onPing: () => this._socket === socket && this._watchdog?.alive(),
    });
  }

  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(decode(data));
    } catch {
      return; // Herald sends only JSON objects; anything else is not ours to interpret
    }
    if (frame === null || typeof frame !== "object") return;
    this._watchdog?.alive();
    this.emit("frame", frame);

    if (frame.type === "welcome") {
      this._welcomed(frame);
      return;
    }
    if (typeof frame.room === "string" && ROOM_FRAME_TYPES.has(frame.type)) {
      this._rooms.get(frame.room)?._receive(frame);
    }
    if (frame.type === "authed" && typeof frame.user === "string") this.user = frame.user;
    if (this._requests.settle(frame)) return;
    switch (frame.type) {
      case "error":
        // With an id it answered a request that is gone (timed out): ignored,
        // as every reply to an unknown id is. Without one it is news.
        if (frame.id === undefined || frame.id === null) this.emit("error", HeraldError.fromFrame(frame));
        break;
      case "direct":
        this.emit("direct", frame);
        break;
      case "broadcast":
        this.emit("broadcast", frame);
        break;
      default:
        break; // room frames were handled above; stray replies are ignored
    }
  }

  _welcomed(frame) {
    this.conn = frame.conn ?? null;
    this.node = frame.node ?? null;
    clearTimeout(this._connectTimer);
    this.heartbeatMs = typeof frame.heartbeat_ms === "number" ? frame.heartbeat_ms : null;
    this._welcome = frame;
    this._startWatchdog();
    // `user: null` means the server waits for an `auth` frame: this client
    // puts its token in the URL, so that happens only without a token, and a
    // server that requires one will close with 4001 (an auth error).
    if (typeof frame.user !== "string") return;
    this.user = frame.user;

    this.state = "connected"; // set quietly: the events go out below, once the rooms are back
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => this._backoff.reset(), this._stableMs);
    // Rooms first: a publish that waited for the connection must reach a room
    // already joined again, and the server handles frames in order. The
    // rejoins are paced (see `_rejoinAll`); what waited goes after them.
    this._rejoinAll();

    const ready = this._ready;
    this._ready = null;
    ready?.resolve(frame);
    this.emit("state", "connected");
    this.emit("connected", { conn: this.conn, user: this.user, node: this.node, heartbeatMs: this.heartbeatMs });
  }

  /**
   * Joins every room of the last connection again, at most
   * `REJOIN_IN_FLIGHT` at once, then sends the requests that waited. A
   * server's rate limit counts joins like any frame and closes a connection
   * after a run of refusals (`limits.rate_strikes`), so a client in many
   * rooms must not send them all at once: a rejoin refused with
   * `RATE_LIMITED` pauses the queue for `REJOIN_PAUSE_MS` and goes again.
   */
  _rejoinAll() {
    const socket = this._socket;
    const queue = [...this._rooms.values()].filter((room) => room._needsRejoin());
    let inFlight = 0;
    let pausedUntil = 0;
    const pump = () => {
      if (this._socket !== socket || this.state !== "connected") return;
      if (queue.length === 0 && inFlight === 0) {
        this._requests.flush();
        return;
      }
      const wait = pausedUntil - Date.now();
      if (wait > 0) {
        clearTimeout(this._rejoinTimer);
        this._rejoinTimer = setTimeout(pump, wait);
        return;
      }
      while (inFlight < REJOIN_IN_FLIGHT && queue.length > 0) {
        const room = queue.shift();
        inFlight += 1;
        room._sendRejoin().then((outcome) => {
          inFlight -= 1;
          if (outcome === "later" && room._needsRejoin()) {
            queue.unshift(room);
            pausedUntil = Date.now() + REJOIN_PAUSE_MS;
          }
          pump();
        });
      }
    };
    pump();
  }

  _closed(code, reason) {
    if (AUTH_CLOSE_CODES.includes(code)) {
      // Herald's contract: the same token fails again, and 4001/4003 are the
      // client's own mistakes. Retrying would loop forever; stop and say why.
      this.emit("authError", { code, reason });
      const err = new HeraldError(ClientCodes.AUTH, `the server refused the authentication: ${code} ${reason}`);
      err.closeCode = code;
      err.reason = reason;
      this._shutdown(ClientCodes.AUTH, err.message, { code, reason }, err);
      return;
    }
    this._lost({ code, reason });
  }

  /** The socket is gone (or given up on): clean up, tell, and try again later. */
  _lost(info) {
    this._detach();
    this._requests.connectionLost();
    for (const room of this._rooms.values()) room._disconnected();
    this._setState("disconnected");
    this._requests.rejectNonWaiting();
    this.emit("disconnected", info);
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    // A listener of "disconnected" may have closed the client or connected again.
    if (!this._active || this.state !== "disconnected" || this._offline || this._reconnectTimer) return;
    if (!this._reconnectEnabled) {
      this._shutdown(ClientCodes.CLOSED, "the connection closed and reconnecting is off");
      return;
    }
    const attempt = this._backoff.attempt;
    const delayMs = this._backoff.next();
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = undefined;
      this._open();
    }, delayMs);
    this.emit("reconnecting", { attempt, delayMs });
  }

  /** Stops everything; `state` becomes "closed" and stays so until connect(). */
  _shutdown(code, message, info = {}, error = new HeraldError(code, message)) {
    this._active = false;
    this._gen++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    this._listenNetwork(false);
    const socket = this._socket;
    this._detach();
    if (socket) closeQuietly(socket, 1000, "");
    for (const room of this._rooms.values()) room._clientClosed();
    this._requests.rejectAll(code, message);
    const ready = this._ready;
    this._ready = null;
    ready?.reject(error);
    this._setState("closed");
    this.emit("closed", info);
  }

  /** Forgets the current socket; its late events are ignored from now on. */
  _detach() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._stableTimer);
    this._stableTimer = undefined;
    clearTimeout(this._rejoinTimer);
    this._rejoinTimer = undefined;
    this._watchdog?.stop();
    this._watchdog = null;
    const socket = this._socket;
    this._socket = null;
    if (socket) detach(socket);
  }

  /** Drops a socket that cannot be trusted (half-open, or the network went away). */
  _abandon(reason) {
    this._gen++; // also cancels an attempt still waiting for its token
    const socket = this._socket;
    this._detach();
    if (socket) abandon(socket, reason);
    this._lost({ code: 1006, reason });
  }

  _startWatchdog() {
    this._watchdog?.stop();
    this._watchdog = null;
    if (!(this.heartbeatMs > 0)) return;
    const socket = this._socket;
    this._watchdog = new Watchdog({
      heartbeatMs: this.heartbeatMs,
      marginMs: this._heartbeatOptions.marginMs,
      probeTimeoutMs: this._heartbeatOptions.probeTimeoutMs,
      probe: () => {
        this.request({ type: "ping" }, { whileDisconnected: "reject", retry: false }).catch(noop);
      },
      dead: () => {
        if (this._socket === socket) this._abandon("no answer to ping");
      },
    });
  }

  // ---- browser network events -----------------------------------------

  _listenNetwork(on) {
    const net = this._network;
    if (!net) return;
    if (on) {
      net.addEventListener("online", this._onOnline);
      net.addEventListener("offline", this._onOffline);
    } else {
      net.removeEventListener("online", this._onOnline);
      net.removeEventListener("offline", this._onOffline);
      this._offline = false;
    }
  }

  // The browser knows the network is gone before any timeout could: drop the
  // socket now, and wait for "online" instead of burning backoff attempts on
  // connections that cannot succeed.
  _offlineNow() {
    if (!this._active) return;
    this._offline = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = undefined;
    if (this.state === "connected" || this.state === "connecting") this._abandon("offline");
  }

  _online() {
    if (!this._active) return;
    this._offline = false;
    // The network is back: what failed before says nothing about now, so
    // an attempt under way that fails is followed by a short delay, not a
    // long one earned while offline.
    this._backoff.reset();
    if (this.state === "disconnected") this._open();
  }

  // ---- helpers ----------------------------------------------------------

  _send(frame) {
    const socket = this._socket;
    if (!socket || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }
}

function wrap(err, code, message) {
  const wrapped = new HeraldError(code, `${message}: ${err?.message ?? err}`);
  wrapped.cause = err;
  return wrapped;
}
