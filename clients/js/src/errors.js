// The one error type the client rejects with.
//
// Server errors keep Herald's own codes (`NOT_IN_ROOM`, `FORBIDDEN`,
// `RATE_LIMITED`, ...; see PROTOCOL.md) so an application matches on
// `err.code` whether the refusal came from the server or from the client.
// The client adds its own codes for what happens on its side of the wire.

/** Codes the client itself rejects with (never sent by a server). */
export const ClientCodes = Object.freeze({
  /** No reply within the request's timeout. */
  TIMEOUT: "TIMEOUT",
  /** The client was closed with close(), or an auth error closed it. */
  CLOSED: "CLOSED",
  /** Not connected, and the request asked not to wait (`whileDisconnected: "reject"`). */
  DISCONNECTED: "DISCONNECTED",
  /** The request was sent, then the connection ended before its reply. */
  CONNECTION_LOST: "CONNECTION_LOST",
  /** Already `maxPending` requests waiting for the connection. */
  TOO_MANY_PENDING: "TOO_MANY_PENDING",
  /** The server refused the token or the authentication (close 4001, 4002, 4003). */
  AUTH: "AUTH",
  /** `getToken` threw or rejected (reported as an "error" event; the client retries with backoff). */
  TOKEN: "TOKEN",
  /** The WebSocket implementation refused to create a socket for the URL (the client closes). */
  CONNECT: "CONNECT",
});

export class HeraldError extends Error {
  /**
   * @param {string} code a Herald error code, or one of ClientCodes
   * @param {string} message for people; match on `code`
   * @param {object} [frame] the server's `error` frame, when there was one
   */
  constructor(code, message, frame) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    if (frame !== undefined) this.frame = frame;
  }

  /** The error for a server `error` frame. */
  static fromFrame(frame) {
    return new HeraldError(String(frame.code ?? "INTERNAL"), String(frame.message ?? frame.code ?? "error"), frame);
  }
}
