//! Chat server on the Node `ws` library, built the way its README and the usual
//! chat tutorials build one: a Map of room name to a Set of sockets, one
//! JSON.stringify per publish and a `send` to every member, and the README's
//! ping/terminate heartbeat. It speaks Herald's wire protocol (welcome, join,
//! publish, ping) so the same load generator can drive both.

'use strict';

const { WebSocketServer } = require('ws');

const PORT = Number(process.env.PORT || 3000);
const HOST = '127.0.0.1';
const NODE = 'ws-peer';
const HEARTBEAT_MS = 25000;

/** room name -> Set of sockets */
const rooms = new Map();
/** room name -> last sequence number handed out */
const seqs = new Map();
let nextConn = 1;

const wss = new WebSocketServer({ host: HOST, port: PORT });

function send(ws, frame) {
  ws.send(JSON.stringify(frame));
}

function sendError(ws, code, message, id) {
  const frame = { type: 'error', code, message };
  if (id !== undefined) frame.id = id;
  send(ws, frame);
}

function join(ws, room) {
  let members = rooms.get(room);
  if (!members) {
    members = new Set();
    rooms.set(room, members);
  }
  members.add(ws);
  ws.rooms.add(room);
}

function leave(ws, room) {
  const members = rooms.get(room);
  if (members) {
    members.delete(ws);
    // Empty rooms are dropped so that churn does not leave the Map growing.
    if (members.size === 0) rooms.delete(room);
  }
  ws.rooms.delete(room);
}

function publish(ws, room, data, id) {
  const members = rooms.get(room);
  if (!members || !members.has(ws)) {
    sendError(ws, 'NOT_IN_ROOM', 'not in room', id);
    return;
  }
  const seq = (seqs.get(room) || 0) + 1;
  seqs.set(room, seq);
  // Encoded once, sent to every member: the one optimisation every guide shows.
  const text = JSON.stringify({ type: 'message', room, from: ws.user, data, seq, ts: Date.now() });
  for (const member of members) {
    member.send(text);
  }
  if (id !== undefined) send(ws, { type: 'ack', seq, id });
}

function onMessage(ws, raw) {
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
      join(ws, frame.room);
      return send(ws, id === undefined
        ? { type: 'joined', room: frame.room, users: [] }
        : { type: 'joined', room: frame.room, users: [], id });
    case 'leave':
      if (typeof frame.room !== 'string') return sendError(ws, 'BAD_REQUEST', 'room required', id);
      leave(ws, frame.room);
      return send(ws, id === undefined ? { type: 'left', room: frame.room } : { type: 'left', room: frame.room, id });
    case 'publish':
      if (typeof frame.room !== 'string') return sendError(ws, 'BAD_REQUEST', 'room required', id);
      return publish(ws, frame.room, frame.data === undefined ? null : frame.data, id);
    case 'ping':
      return send(ws, id === undefined ? { type: 'pong' } : { type: 'pong', id });
    default:
      return sendError(ws, 'UNKNOWN_TYPE', 'unknown type', id);
  }
}

function heartbeat() {
  this.isAlive = true;
}

wss.on('connection', (ws) => {
  const conn = String(nextConn++);
  ws.user = `anon:${conn}`;
  ws.rooms = new Set();
  ws.isAlive = true;
  ws.on('error', console.error);
  ws.on('pong', heartbeat);
  ws.on('message', (raw) => onMessage(ws, raw));
  ws.on('close', () => {
    for (const room of ws.rooms) leave(ws, room);
  });
  send(ws, { type: 'welcome', conn, user: null, node: NODE, heartbeat_ms: HEARTBEAT_MS });
});

// The README's keep-alive: a socket that has not answered the previous ping by
// the next tick is considered dead and terminated.
const interval = setInterval(() => {
  for (const ws of wss.clients) {
    if (ws.isAlive === false) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_MS);

wss.on('close', () => clearInterval(interval));

wss.on('listening', () => {
  console.log(`ws peer listening on ${HOST}:${PORT}`);
});
