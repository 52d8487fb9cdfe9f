// Requests and their replies: ids, timeouts, and what waits for a connection.
//
// Herald's reply rule: a frame with an `id` gets exactly one reply carrying
// that `id`, its success frame or an `error`. So every request gets a fresh
// string id, and a table from id to promise settles it. Ids are never reused
// for the life of the client, so a reply that comes after its request timed
// out matches nothing and is ignored.
//
// While the client is not connected a request either waits for the next
// connection (the default, bounded by `maxPending` and by its own timeout,
// which runs from the call) or is refused at once. A request already written
// to a socket that then closes is a different case: the new connection knows
// nothing of it (Herald keeps nothing for a connection once it has ended), so
// its reply will never come. Requests that are safe to send twice (join,
// leave, presence, status, ping: their `retry` flag) go back to the front of
// the queue; the others (publish, direct, typing) are rejected with
// CONNECTION_LOST, because sending them again could deliver a message twice
// and only the application knows whether that is acceptable.

import { ClientCodes, HeraldError } from "./errors.js";

/** Frame types whose second sending does no harm. */
export const RETRYABLE_TYPES = new Set(["join", "leave", "presence", "status", "ping"]);

export class Requests {
  /**
   * @param {object} options
   * @param {(frame: object) => boolean} options.send writes a frame; false when there is no open socket
   * @param {() => boolean} options.isReady true while the client may send requests
   * @param {() => boolean} options.isClosed true once the client was closed
   * @param {number} options.timeoutMs default timeout of a request
   * @param {number} options.maxPending most requests waiting for a connection
   * @param {"wait"|"reject"} options.whileDisconnected default mode
   */
  constructor({ send, isReady, isClosed, timeoutMs, maxPending, whileDisconnected }) {
    this._send = send;
    this._isReady = isReady;
    this._isClosed = isClosed;
    this.timeoutMs = timeoutMs;
    this.maxPending = maxPending;
    this.whileDisconnected = whileDisconnected;
    this._nextId = 0;
    /** Every unsettled request by id, waiting or sent. */
    this._pending = new Map();
    /** Ids waiting for a connection, in the order they are to be sent. */
    this._queue = [];
  }

  /** How many requests are unsettled (waiting or sent). */
  get size() {
    return this._pending.size;
  }

  /** How many requests wait for a connection. */
  get waiting() {
    return this._queue.length;
  }

  /**
   * Sends `frame` with a fresh id; the promise settles with its reply.
   * @param {object} frame a client frame without id
   * @param {object} [options]
   * @param {number} [options.timeoutMs]
   * @param {"wait"|"reject"} [options.whileDisconnected]
   * @param {boolean} [options.retry] resend after a lost connection (default: by frame type)
   * @param {(reply: object) => void} [options.onReply] called as the reply is read, before
   *   any later frame: for state that must change in the same step (a promise's
   *   continuation runs too late when several frames arrive in one read)
   */
  request(frame, options = {}) {
    if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
      return Promise.reject(new TypeError("a request is an object with a string `type`"));
    }
    const mode = options.whileDisconnected ?? this.whileDisconnected;
    if (mode !== "wait" && mode !== "reject") {
      return Promise.reject(new TypeError('whileDisconnected must be "wait" or "reject"'));
    }
    if (this._isClosed()) {
      return Promise.reject(new HeraldError(ClientCodes.CLOSED, "the client is closed"));
    }
    const ready = this._isReady();
    if (!ready && mode === "reject") {
      return Promise.reject(new HeraldError(ClientCodes.DISCONNECTED, "not connected"));
    }
    if (!ready && this._queue.length >= this.maxPending) {
      return Promise.reject(
        new HeraldError(ClientCodes.TOO_MANY_PENDING, `${this.maxPending} requests already wait for the connection`),
      );
    }

    const id = String(++this._nextId);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return new Promise((resolve, reject) => {
      const entry = {
        id,
        frame: { ...frame, id },
        resolve,
        reject,
        mode,
        retry: options.retry ?? RETRYABLE_TYPES.has(frame.type),
        onReply: options.onReply,
        sent: false,
        timer: undefined,
      };
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        entry.timer = setTimeout(() => {
          this._drop(id);
          reject(new HeraldError(ClientCodes.TIMEOUT, `no reply to ${frame.type} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._pending.set(id, entry);
      if (!(ready && this._write(entry))) this._queue.push(id);
    });
  }

  /** Sends what waited for the connection, in order. Call once connected. */
  flush() {
    const queue = this._queue;
    this._queue = [];
    for (let i = 0; i < queue.length; i++) {
      const entry = this._pending.get(queue[i]);
      if (!entry) continue; // timed out meanwhile
      if (!this._write(entry)) {
        // The socket went away under us: keep the rest, in order, for the next one.
        this._queue = queue.slice(i).concat(this._queue);
        return;
      }
    }
  }

  /**
   * Settles the request `frame` replies to. Returns true when the frame was
   * a reply to one of ours; false for an unknown or missing id.
   */
  settle(frame) {
    if (frame.id === undefined || frame.id === null) return false;
    const id = String(frame.id);
    const entry = this._pending.get(id);
    if (!entry || !entry.sent) return false;
    this._drop(id);
    if (frame.type === "error") {
      entry.reject(HeraldError.fromFrame(frame));
      return true;
    }
    if (entry.onReply) {
      try {
        entry.onReply(frame);
      } catch (err) {
        entry.reject(err);
        return true;
      }
    }
    entry.resolve(frame);
    return true;
  }

  /**
   * The socket closed: what was sent will get no reply. Requests safe to
   * send again, and allowed to wait, go back to the front of the queue; the
   * others are rejected with CONNECTION_LOST.
   */
  connectionLost() {
    const requeue = [];
    for (const entry of [...this._pending.values()]) {
      if (!entry.sent) continue;
      if (entry.retry && entry.mode === "wait") {
        entry.sent = false;
        requeue.push(entry.id);
      } else {
        this._drop(entry.id);
        entry.reject(
          new HeraldError(ClientCodes.CONNECTION_LOST, `the connection closed before the reply to ${entry.frame.type}`),
        );
      }
    }
    // Map order is insertion order, so requeue keeps the order they were made in.
    this._queue = requeue.concat(this._queue);
  }

  /** Rejects every unsettled request, waiting or sent (close(), auth error). */
  rejectAll(code, message) {
    const entries = [...this._pending.values()];
    this._pending.clear();
    this._queue = [];
    for (const entry of entries) {
      clearTimeout(entry.timer);
      entry.reject(new HeraldError(code, message));
    }
  }

  /** Rejects requests that may not wait, once the client knows it is disconnected. */
  rejectNonWaiting() {
    for (const id of [...this._queue]) {
      const entry = this._pending.get(id);
      if (entry && entry.mode === "reject") {
        this._drop(id);
        entry.reject(new HeraldError(ClientCodes.DISCONNECTED, "not connected"));
      }
    }
  }

  _write(entry) {
    let ok = false;
    try {
      ok = this._send(entry.frame);
    } catch {
      ok = false;
    }
    if (ok) entry.sent = true;
    return ok;
  }

  _drop(id) {
    const entry = this._pending.get(id);
    if (!entry) return;
    clearTimeout(entry.timer);
    this._pending.delete(id);
    const at = this._queue.indexOf(id);
    if (at >= 0) this._queue.splice(at, 1);
  }
}
