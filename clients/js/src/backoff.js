// Reconnect delays: exponential backoff with full jitter.
//
// After a server restart every client of that server loses its connection at
// the same instant. If they all came back after the same delay they would hit
// the new process together, again and again at each doubling. "Full jitter"
// (delay drawn uniformly from [0, cap), cap = min(max, base * 2^attempt))
// spreads each wave over the whole window, which AWS's measurements found
// gives the least total work and the fastest recovery of the usual schemes
// ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).

/** Defaults, as Herald's PROTOCOL.md suggests: from 0.5 s, doubling up to 30 s. */
export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, maxMs: 30000 });

export class Backoff {
  /**
   * @param {object} [options]
   * @param {number} [options.baseMs=500] cap of the first delay
   * @param {number} [options.maxMs=30000] largest cap, whatever the attempt
   * @param {() => number} [options.random=Math.random] a source in [0, 1), replaceable in tests
   */
  constructor({ baseMs = DEFAULT_BACKOFF.baseMs, maxMs = DEFAULT_BACKOFF.maxMs, random = Math.random } = {}) {
    if (!(baseMs >= 0) || !(maxMs >= 0)) throw new RangeError("backoff baseMs and maxMs must be numbers >= 0");
    this.baseMs = baseMs;
    this.maxMs = Math.max(baseMs, maxMs);
    this.random = random;
    /** Failed attempts since the last reset: the exponent of the next cap. */
    this.attempt = 0;
  }

  /** The cap of the delay for `attempt`: min(max, base * 2^attempt). */
  cap(attempt = this.attempt) {
    // 2^31 * any sensible base is already far past any max; stopping the
    // exponent there keeps the product finite however long a server is away.
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(attempt, 31));
  }

  /** The delay before the next attempt, and one more attempt counted. */
  next() {
    const delay = Math.floor(this.random() * this.cap());
    this.attempt += 1;
    return delay;
  }

  /** Back to the first, shortest window (after a connection proved stable). */
  reset() {
    this.attempt = 0;
  }
}
