// What the client needs from a WebSocket, whatever implements it: the
// browser's, Node's global one (Node 22+, or 20 with --experimental-websocket),
// or the `ws` package. All three offer the same `on*` properties and
// `readyState`; these helpers smooth over the few places they differ.

/** WebSocket.OPEN, the same in every implementation. */
export const OPEN = 1;

export function noop() {}

/**
 * Sets the socket's handlers; `onPing` is called for the server's WebSocket
 * pings where the implementation reports them (the `ws` package does,
 * browsers do not).
 */
export function attach(socket, { onMessage, onClose, onPing }) {
  socket.onopen = noop;
  // A close event always follows an error, with the code that matters.
  socket.onerror = noop;
  socket.onmessage = (event) => onMessage(event.data);
  socket.onclose = (event) => onClose(event.code, event.reason ?? "");
  if (typeof socket.on === "function") socket.on("ping", onPing);
}

/**
 * Silences a socket the client no longer uses. No-ops rather than null: the
 * `ws` package throws when it emits 'error' with no listener, and closing a
 * socket that is still connecting emits one.
 */
export function detach(socket) {
  socket.onopen = socket.onmessage = socket.onclose = socket.onerror = noop;
}

/** Closes, ignoring a socket already closing or a code the implementation refuses. */
export function closeQuietly(socket, code, reason) {
  try {
    socket.close(code, reason);
  } catch {
    // nothing left to do
  }
}

/**
 * Drops a socket whose peer cannot be trusted to answer. terminate() (the
 * `ws` package) ends the TCP connection at once; close() would wait for a
 * closing handshake that a dead peer never completes, which is fine in a
 * browser (it gives up by itself) since the client no longer listens.
 */
export function abandon(socket, reason) {
  if (typeof socket.terminate === "function") {
    try {
      socket.terminate();
      return;
    } catch {
      // fall through to close()
    }
  }
  closeQuietly(socket, 4000, reason);
}

/** The text of a message event's data (Herald sends only text frames). */
export function decode(data) {
  if (typeof data === "string") return data;
  if (typeof Buffer !== "undefined" && Buffer.isBuffer?.(data)) return data.toString("utf8");
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}

/**
 * The URL of one attempt: a ws(s) scheme (http(s) and, in a browser, paths
 * such as `/ws` are accepted), and the token as `?token=`. Browsers cannot
 * set headers on a WebSocket, so the token rides in the query, where Herald
 * looks second, after an Authorization header.
 */
export function socketUrl(raw, token) {
  let url;
  try {
    const base = globalThis.location?.href;
    url = base ? new URL(raw, base) : new URL(raw);
  } catch {
    throw new TypeError(`not a WebSocket URL: ${raw}`);
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new TypeError(`not a WebSocket URL: ${raw}`);
  if (token !== undefined && token !== null && token !== "") url.searchParams.set("token", String(token));
  return url.toString();
}

/** The browser's window, when it reports the network going and coming; null elsewhere. */
export function defaultNetwork() {
  const g = globalThis;
  const listens = typeof g.addEventListener === "function" && typeof g.removeEventListener === "function";
  return listens && typeof g.navigator !== "undefined" ? g : null;
}
