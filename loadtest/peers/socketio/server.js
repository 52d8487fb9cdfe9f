//! Chat server on Socket.IO 4, written as its documentation and the usual
//! tutorials write one: `socket.join(room)` on a join event, and
//! `io.to(room).emit("message", …)` on a publish, which reaches every member of
//! the room including the sender.
//!
//! Events have the shape of Herald's Socket.IO endpoint, so one load client
//! measures both: each takes one object argument with the fields of Herald's
//! frame of that type (`{room}`, `{room, data}`), and its reply, when the
//! client asked for an acknowledgement, is the ack's one argument (`{type:
//! "joined", room, ...}`, `{type: "ack"}`, or an `error` frame).
//!
//! TRANSPORTS (comma-separated, default `websocket`) picks engine.io's
//! transports: `websocket` alone lets clients speak engine.io straight over a
//! WebSocket with no long-polling; `polling,websocket` is Socket.IO's own
//! default, for clients that start on HTTP long polling.

'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const HOST = '127.0.0.1';
const TRANSPORTS = (process.env.TRANSPORTS || 'websocket')
  .split(',')
  .map((t) => t.trim())
  .filter((t) => t !== '');
for (const transport of TRANSPORTS) {
  if (transport !== 'websocket' && transport !== 'polling') {
    console.error(`socketio peer: unknown transport '${transport}' in TRANSPORTS (known: websocket, polling)`);
    process.exit(2);
  }
}

const httpServer = http.createServer();
const io = new Server(httpServer, { transports: TRANSPORTS });

/// Answers through the acknowledgement when the client asked for one; a
/// client that did not gets nothing, as from Herald.
function reply(ack, frame) {
  if (typeof ack === 'function') ack(frame);
}

function badRequest(message) {
  return { type: 'error', code: 'BAD_REQUEST', message };
}

/// The room of an event's argument: `{room}` (Herald's shape) or a bare name.
function roomOf(arg) {
  if (typeof arg === 'string') return arg;
  if (arg !== null && typeof arg === 'object' && typeof arg.room === 'string') return arg.room;
  return null;
}

io.on('connection', (socket) => {
  socket.on('join', (arg, ack) => {
    const room = roomOf(arg);
    if (room === null) return reply(ack, badRequest('join needs a room'));
    socket.join(room);
    reply(ack, { type: 'joined', room, users: [] });
  });

  socket.on('leave', (arg, ack) => {
    const room = roomOf(arg);
    if (room === null) return reply(ack, badRequest('leave needs a room'));
    socket.leave(room);
    reply(ack, { type: 'left', room });
  });

  socket.on('publish', (msg, ack) => {
    if (msg === null || typeof msg !== 'object' || typeof msg.room !== 'string') {
      return reply(ack, badRequest('publish needs a room'));
    }
    const data = msg.data === undefined ? null : msg.data;
    io.to(msg.room).emit('message', { type: 'message', room: msg.room, data, ts: Date.now() });
    reply(ack, { type: 'ack' });
  });

  // `ping` takes no argument, so the ack may come first.
  socket.on('ping', (arg, ack) => {
    reply(typeof arg === 'function' ? arg : ack, { type: 'pong' });
  });
});

httpServer.on('error', (err) => {
  console.error(`socketio peer failed: ${err.message}`);
  process.exit(1);
});

httpServer.listen(PORT, HOST, () => {
  console.log(`socketio peer listening on ${HOST}:${PORT} (transports: ${TRANSPORTS.join(',')})`);
});
