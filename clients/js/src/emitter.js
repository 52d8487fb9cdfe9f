// A small event emitter shared by the client and its rooms.
//
// Not Node's EventEmitter (the package has no dependencies and must run in
// browsers as-is) and not the DOM's EventTarget (its listeners get an Event
// wrapper, where Herald's listeners want the frame itself).
//
// Two choices differ from Node's emitter on purpose:
// - emitting "error" with no listener does nothing: a real-time client gets
//   error frames it did not ask for, and an application that does not listen
//   for them should not crash for it;
// - a listener that throws does not stop the others, nor the frame handling
//   that emitted the event (a throw in the middle of a replay would otherwise
//   lose the rest of it): the exception is rethrown on a fresh task, where
//   the browser's console or Node's uncaught-exception handling reports it.

export class Emitter {
  constructor() {
    /** @type {Map<string, Array<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Calls `fn` for every `event` from now on; returns a function that
   * removes it, so a component can keep one handle to undo its subscription.
   */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    const list = this._listeners.get(event);
    if (list) list.push(fn);
    else this._listeners.set(event, [fn]);
    return () => this.off(event, fn);
  }

  /** Calls `fn` for the next `event` only. */
  once(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn.apply(this, args);
    };
    // Lets off(event, fn) remove a listener added with once().
    wrapper.listener = fn;
    return this.on(event, wrapper);
  }

  /** Removes `fn` (its first registration); without `fn`, every listener of `event`. */
  off(event, fn) {
    const list = this._listeners.get(event);
    if (!list) return;
    if (fn === undefined) {
      this._listeners.delete(event);
      return;
    }
    const at = list.findIndex((l) => l === fn || l.listener === fn);
    if (at >= 0) list.splice(at, 1);
    if (list.length === 0) this._listeners.delete(event);
  }

  /** How many listeners `event` has. */
  listenerCount(event) {
    return this._listeners.get(event)?.length ?? 0;
  }

  /** Calls every listener of `event` with `args`; true when there was one. */
  emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list) return false;
    // A copy: a listener may remove itself (once) or others while we iterate.
    for (const fn of [...list]) {
      try {
        fn.apply(this, args);
      } catch (err) {
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
    return true;
  }
}
