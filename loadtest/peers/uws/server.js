//! Chat server on uWebSockets.js (npm package `uwebsockets` 3.0.6, a republish
//! of the uWS.js v20 binaries), using its built-in pub/sub the way its examples
//! do: a join is `ws.subscribe(room)`, a publish is one `app.publish(room, text)`.
//! It speaks Herald's wire protocol so the same load generator can drive both.
//! Idle timeout, automatic pings and backpressure limits are the library's defaults.

'use strict';

const uWS = require('uwebsockets');

const PORT = Number(process.env.PORT || 3000);
const HOST = '127.0.0.1';
const NODE = 'uws-peer';
const HEARTBEAT_MS = 25000;
// Herald is run with a 1 MiB frame limit in the comparison; uWS's own default is 16 KiB.
const MAX_PAYLOAD = 1024 * 1024;

/** room name -> last sequence number handed out */
const seqs = new Map();
let nextConn = 1;

function send(ws, frame) {
  ws.send(JSON.stringify(frame), false);
}

function sendError(ws, code, message, id) {
  const frame = { type: 'error', code, message };
  if (id !== undefined) frame.id = id;
  send(ws, frame);
}

function withId(frame, id) {
  if (id !== undefined) frame.id = id;
  return frame;
}

function onMessage(app, ws, raw) {
  let frame;
  try {
    frame = JSON.parse(raw);
  } catch {
    sendError(ws, 'INVALID_JSON', 'invalid JSON');
    return;
  }
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    sendError(ws, 'BAD_REQUEST', 'frame must be an object');
    return;
  }
  const { id } = frame;
  switch (frame.type) {
    case 'join':
      if (typeof frame.room !== 'string') return sendError(ws, 'BAD_REQUEST', 'room required', id);
      ws.subscribe(frame.room);
      return send(ws, withId({ type: 'joined', room: frame.room, users: [] }, id));
    case 'leave':
      if (typeof frame.room !== 'string') return sendError(ws, 'BAD_REQUEST', 'room required', id);
      ws.unsubscribe(frame.room);
      return send(ws, withId({ type: 'left', room: frame.room }, id));
    case 'publish': {
      const { room } = frame;
      if (typeof room !== 'string') return sendError(ws, 'BAD_REQUEST', 'room required', id);
      if (!ws.isSubscribed(room)) return sendError(ws, 'NOT_IN_ROOM', 'not in room', id);
      const seq = (seqs.get(room) || 0) + 1;
      seqs.set(room, seq);
      const data = frame.data === undefined ? null : frame.data;
      const text = JSON.stringify({ type: 'message', room, from: ws.getUserData().user, data, seq, ts: Date.now() });
      // app.publish, unlike ws.publish, also reaches the publishing socket, as Herald's echo does.
      app.publish(room, text, false);
      if (id !== undefined) send(ws, { type: 'ack', seq, id });
      return undefined;
    }
    case 'ping':
      return send(ws, withId({ type: 'pong' }, id));
    default:
      return sendError(ws, 'UNKNOWN_TYPE', 'unknown type', id);
  }
}

const app = uWS.App();

app.ws('/*', {
  maxPayloadLength: MAX_PAYLOAD,
  open: (ws) => {
    const conn = String(nextConn++);
    const state = ws.getUserData();
    state.conn = conn;
    state.user = `anon:${conn}`;
    send(ws, { type: 'welcome', conn, user: null, node: NODE, heartbeat_ms: HEARTBEAT_MS });
  },
  message: (ws, message, isBinary) => {
    if (isBinary) {
      sendError(ws, 'BAD_REQUEST', 'binary frames are not supported');
      return;
    }
    // The ArrayBuffer is only valid during this callback, so it is decoded right away.
    onMessage(app, ws, Buffer.from(message).toString('utf8'));
  },
});

app.listen(HOST, PORT, (listenSocket) => {
  if (!listenSocket) {
    console.error(`uws peer failed to listen on ${HOST}:${PORT}`);
    process.exit(1);
  }
  console.log(`uws peer listening on ${HOST}:${PORT}`);
});
