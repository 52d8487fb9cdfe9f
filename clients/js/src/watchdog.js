// Half-open connection detection.
//
// A TCP connection can die without either end being told: a laptop lid, a
// NAT that forgot the mapping, a mobile network switching cells. The socket
// then looks open for minutes while nothing goes through. Herald pings every
// `heartbeat_ms` (from `welcome`), but browsers hide WebSocket pings from
// pages, so a browser client cannot tell a quiet room from a dead link by
// pings alone. The watchdog therefore watches for anything at all: a frame,
// or a ping where the WebSocket implementation reports them (the `ws`
// package does). After `heartbeat_ms` plus a margin with nothing, it sends an
// application `ping` frame; if nothing arrives within the probe timeout
// either, the link is dead and the client drops it and reconnects.
//
// The probe costs one token of the connection's rate limit, once per quiet
// heartbeat interval at most: nothing next to the default 10 a second.

export class Watchdog {
  /**
   * @param {object} options
   * @param {number} options.heartbeatMs the server's ping interval (welcome.heartbeat_ms)
   * @param {() => void} options.probe sends an application ping
   * @param {() => void} options.dead called once when the link is judged dead
   * @param {number} [options.marginMs] added to heartbeatMs before probing
   * @param {number} [options.probeTimeoutMs] how long a probe may go unanswered
   */
  constructor({ heartbeatMs, probe, dead, marginMs, probeTimeoutMs }) {
    this.heartbeatMs = heartbeatMs;
    // The server's timers run on a coarse clock (up to a tenth of the
    // interval late, at most a second), and the network adds its own delay:
    // a margin of a quarter of the interval, at least a second, covers both
    // without waiting much longer than a missed ping.
    this.idleMs = heartbeatMs + (marginMs ?? Math.max(1000, Math.round(heartbeatMs / 4)));
    this.probeTimeoutMs = probeTimeoutMs ?? Math.min(heartbeatMs, 10000);
    this._probe = probe;
    this._dead = dead;
    this._lastRx = Date.now();
    this._probeSentAt = 0;
    this._timer = undefined;
    this._stopped = false;
    this._schedule(this.idleMs);
  }

  /** Something arrived: the link is alive. Cheap, called for every frame. */
  alive() {
    this._lastRx = Date.now();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
  }

  _schedule(ms) {
    clearTimeout(this._timer);
    if (this._stopped) return;
    this._timer = setTimeout(() => this._check(), Math.max(0, ms));
  }

  // Frames only record a time; this timer reads it, so a busy connection
  // costs one timer per interval rather than one reset per frame.
  _check() {
    if (this._stopped) return;
    const now = Date.now();
    if (this._probeSentAt) {
      if (this._lastRx >= this._probeSentAt) {
        this._probeSentAt = 0; // answered (by the pong or by anything else)
      } else if (now - this._probeSentAt >= this.probeTimeoutMs) {
        this.stop();
        this._dead();
        return;
      } else {
        this._schedule(this._probeSentAt + this.probeTimeoutMs - now);
        return;
      }
    }
    const quiet = now - this._lastRx;
    if (quiet < this.idleMs) {
      this._schedule(this.idleMs - quiet);
      return;
    }
    this._probeSentAt = now;
    try {
      this._probe();
    } catch {
      // A probe that cannot be written is a probe nobody answers: the timeout decides.
    }
    this._schedule(this.probeTimeoutMs);
  }
}
