// Room: one room of a HeraldClient, as the application sees it across
// connections.
//
// A room remembers what a reconnect needs: the last `seq` it delivered and
// the `epoch` of that numbering. When the connection comes back it joins
// again with `since` and `epoch`, and Herald either replays what was missed
// (`recovered: true`: ordinary `message` frames, in order, after `joined`)
// or says it cannot (`recovered: false`: the history no longer reaches back,
// or the server restarted and its numbering started over), and the room
// emits "reset" so the application reloads it.
//
// `seq` is advanced by the messages themselves, never by `joined.seq` after
// a recovering join: the replay is still on its way when `joined` arrives,
// and jumping ahead would make every replayed message look like a duplicate.

import { Emitter } from "./emitter.js";
import { ClientCodes, HeraldError } from "./errors.js";

/** Server frames that belong to a room, routed to it by their `room` field. */
export const ROOM_FRAME_TYPES = new Set(["joined", "left", "message", "user_joined", "user_left", "typing"]);

/** Rejoin failures worth another try on the same connection, and how many tries. */
const TRANSIENT = new Set(["INTERNAL", "RATE_LIMITED", ClientCodes.TIMEOUT]);
const REJOIN_TRIES = 3;

export class Room extends Emitter {
  constructor(client, name) {
    super();
    this._client = client;
    this.name = name;
    /** The users in the room, kept current by `joined`, `user_joined` and `user_left`. One Set for the room's life. */
    this.users = new Set();
    /** Distinct users in the room, in every namespace (also where `users` stays empty). */
    this.count = 0;
    /** The last `seq` delivered to the application (0: none yet). */
    this.seq = 0;
    /** The numbering `seq` belongs to (from `joined`); null before the first join. */
    this.epoch = null;
    /** True while the current connection is in the room. */
    this.joined = false;

    this._rejoin = false; // in the room when the last connection ended: join again with since
    this._rejoinTries = 0;
    this._joinsPending = 0; // join() calls not yet answered
    this._replayUntil = 0; // while > 0, messages up to this seq are a replay
    this._listed = true; // false in a namespace with presence = false
    this._ownUnechoed = new Set(); // seqs of our own echo:false publishes not yet passed
    this._typingOn = false;
    this._typingSentAt = 0;
    this._typingTimer = undefined;
  }

  // ---- requests -------------------------------------------------------

  /**
   * Joins the room; resolves with the `joined` frame. The room stays joined
   * across reconnects until leave() or close().
   */
  async join(options) {
    this._joinsPending++;
    try {
      return await this._client.request({ type: "join", room: this.name }, options);
    } finally {
      this._joinsPending--;
    }
  }

  /** Leaves the room; resolves with the `left` frame. */
  async leave(options) {
    this._rejoin = false;
    // Until its `left` arrives: a connection lost meanwhile must not join
    // the room again (the leave itself is sent again on the next one).
    this._leaving = true;
    this.stopTyping();
    if (!this.joined && this._joinsPending === 0 && this._client.state !== "connected") {
      // The next connection starts in no room and no join waits to be sent:
      // nothing to tell the server.
      this._clear();
      return { type: "left", room: this.name };
    }
    try {
      return await this._client.request({ type: "leave", room: this.name }, options);
    } finally {
      this._leaving = false;
    }
  }

  /**
   * Publishes `data` to the room; resolves with the message's `seq`.
   * `echo: false`: this connection does not receive its own message.
   */
  async publish(data, options = {}) {
    const frame = { type: "publish", room: this.name, data: data === undefined ? null : data };
    const unechoed = options.echo === false;
    if (unechoed) frame.echo = false;
    const ack = await this._client.request(frame, {
      timeoutMs: options.timeoutMs,
      whileDisconnected: options.whileDisconnected,
      // Runs as the ack is read: the next message must already know this seq
      // is ours, or it would report the hole our unechoed message leaves as a gap.
      onReply: unechoed ? (reply) => this._unechoed(reply.seq) : undefined,
    });
    return ack.seq;
  }

  /**
   * Tells the room this user is (or stopped) typing. Fire and forget: the
   * promise resolves true on the server's ack, false on any failure, and
   * never rejects. Not sent while disconnected: a stale indicator is noise.
   */
  typing(on = true) {
    return this._client
      .request({ type: "typing", room: this.name, typing: Boolean(on) }, { whileDisconnected: "reject", retry: false })
      .then(
        () => true,
        () => false,
      );
  }

  /**
   * Call on every keystroke. Sends `typing: true` at most once per
   * `typingOptions.throttleMs` (3 s) while called, so receivers that expire
   * an indicator keep seeing it, and `typing: false` after
   * `typingOptions.idleMs` (5 s) without a call. Keystrokes are far more
   * frequent than Herald's default rate limit (10 frames a second) allows.
   */
  startTyping() {
    if (!this.joined) return;
    const { throttleMs, idleMs } = this._client.typingOptions;
    const now = Date.now();
    if (!this._typingOn || now - this._typingSentAt >= throttleMs) {
      this._typingOn = true;
      this._typingSentAt = now;
      this.typing(true);
    }
    clearTimeout(this._typingTimer);
    this._typingTimer = setTimeout(() => this.stopTyping(), idleMs);
  }

  /** Sends `typing: false` now, if startTyping() had said true. */
  stopTyping() {
    clearTimeout(this._typingTimer);
    this._typingTimer = undefined;
    if (!this._typingOn) return;
    this._typingOn = false;
    if (this.joined) this.typing(false);
  }

  // ---- frames ---------------------------------------------------------

  /** A frame of this room, as it is read (see ROOM_FRAME_TYPES). */
  _receive(frame) {
    switch (frame.type) {
      case "joined":
        return this._onJoined(frame);
      case "left":
        this._rejoin = false;
        this._clear();
        this.emit("left", frame);
        return;
      case "message":
        return this._onMessage(frame);
      case "user_joined":
        return this._onUser(frame, true);
      case "user_left":
        return this._onUser(frame, false);
      case "typing":
        if (this.joined) this.emit("typing", frame);
        return;
      default:
        return;
    }
  }

  _onJoined(frame) {
    this.joined = true;
    this._rejoin = false;
    this._rejoinTries = 0;
    if (typeof frame.epoch === "string") this.epoch = frame.epoch;
    const users = Array.isArray(frame.users) ? frame.users : [];
    // With presence off the list is empty but `count` counts, ourselves
    // included, so an empty list in a room we just joined means "not listed".
    this._listed = users.length > 0 || frame.count === 0;
    this.users.clear();
    for (const user of users) this.users.add(user);
    this.count = typeof frame.count === "number" ? frame.count : users.length;

    const latest = typeof frame.seq === "number" ? frame.seq : 0;
    if (frame.recovered === true) {
      // The missed messages follow this frame; `seq` advances as they come.
      this._replayUntil = latest > this.seq ? latest : 0;
    } else {
      // A fresh join, or a gap the server cannot fill: carry on from here.
      this.seq = latest;
      this._replayUntil = 0;
      this._ownUnechoed.clear();
    }
    this.emit("joined", frame);
    if (frame.recovered === false) this.emit("reset", { room: this.name, seq: this.seq, epoch: this.epoch });
  }

  _onMessage(frame) {
    // After `left`, a frame already on its way may still arrive: not ours any more.
    if (!this.joined) return;
    const seq = frame.seq;
    if (typeof seq !== "number") {
      this.emit("message", frame, { replayed: false });
      return;
    }
    if (seq <= this.seq) return; // already delivered (a replay overlapping what we had)
    const replayed = seq <= this._replayUntil;
    // Our own echo:false message, replayed after a rejoin: not for us.
    const own = this._ownUnechoed.has(seq);
    if (seq > this.seq + 1) {
      let from = this.seq + 1;
      let to = seq - 1;
      while (from <= to && this._ownUnechoed.has(from)) from++;
      while (to >= from && this._ownUnechoed.has(to)) to--;
      if (from <= to) this.emit("gap", { room: this.name, from, to });
    }
    for (const own of this._ownUnechoed) if (own <= seq) this._ownUnechoed.delete(own);
    this.seq = seq;
    this._skipOwn();
    if (seq >= this._replayUntil) this._replayUntil = 0;
    if (own) return;
    this.emit("message", frame, { replayed });
  }

  /** Our own echo:false message took `seq`: it will never arrive here, and is no gap. */
  _unechoed(seq) {
    if (typeof seq !== "number" || seq <= this.seq) return;
    this._ownUnechoed.add(seq);
    this._skipOwn();
  }

  /**
   * Moves `seq` past our own echo:false messages that come next: they never
   * arrive here, and a rejoin's `since` must not ask for them back.
   */
  _skipOwn() {
    while (this._ownUnechoed.delete(this.seq + 1)) this.seq++;
  }

  _onUser(frame, arrived) {
    if (!this.joined) return;
    const user = frame.user;
    if (this._listed) {
      // Guarded by the set so a repeated event cannot drift the count.
      if (arrived && !this.users.has(user)) {
        this.users.add(user);
        this.count++;
      } else if (!arrived && this.users.delete(user)) {
        this.count = Math.max(0, this.count - 1);
      }
    } else {
      // The namespace hides the list: count what we are told, list nobody.
      this.count = Math.max(0, this.count + (arrived ? 1 : -1));
    }
    this.emit(arrived ? "user_joined" : "user_left", frame);
  }

  // ---- the client's connection events ---------------------------------

  /** Whether a new connection has to join this room again. */
  _needsRejoin() {
    return this._rejoin;
  }

  /**
   * Joins again on a new connection, asking for what was missed. Resolves
   * with "done", or "later" when the server asked to slow down (rate limit,
   * a busy room): the client's rejoin queue then pauses and tries again.
   */
  _sendRejoin() {
    const frame = { type: "join", room: this.name };
    if (this.epoch !== null) {
      frame.since = this.seq;
      frame.epoch = this.epoch;
    }
    return this._client.request(frame, { whileDisconnected: "reject", retry: false }).then(() => "done", (err) => {
      // Lost again before the answer: `_rejoin` is still set, the next connection retries.
      if (err.code === ClientCodes.CONNECTION_LOST || err.code === ClientCodes.DISCONNECTED) return "done";
      if (err.code === ClientCodes.CLOSED || !this._rejoin) return "done";
      if (err.code === "RATE_LIMITED") return "later";
      if (TRANSIENT.has(err.code) && ++this._rejoinTries < REJOIN_TRIES) return "later";
      // Refused for good (the new token's `rooms` claim no longer allows it, say):
      // its members as last seen are no longer known.
      this._rejoin = false;
      this._rejoinTries = 0;
      this._clear();
      const failure = new HeraldError(err.code, `could not join ${this.name} again: ${err.message}`, err.frame);
      failure.room = this.name;
      this._client.emit("error", failure);
      this.emit("error", failure);
      return "done";
    });
  }

  _disconnected() {
    if (this.joined && !this._leaving) this._rejoin = true;
    this.joined = false;
    this._replayUntil = 0;
    // The server forgets the indicator with the connection; so do we.
    clearTimeout(this._typingTimer);
    this._typingTimer = undefined;
    this._typingOn = false;
  }

  _clientClosed() {
    this._rejoin = false;
    this._clear();
    clearTimeout(this._typingTimer);
    this._typingTimer = undefined;
    this._typingOn = false;
  }

  _clear() {
    this.joined = false;
    this._replayUntil = 0;
    this.users.clear();
    this.count = 0;
  }
}
