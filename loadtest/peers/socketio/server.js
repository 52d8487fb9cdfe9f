//! Chat server on Socket.IO 4, written as its documentation and the usual
//! tutorials write one: `socket.join(room)` on a join event, and
//! `io.to(room).emit("message", …)` on a publish, which reaches every member of
//! the room including the sender. Only the WebSocket transport is enabled, so the
//! load generator can speak engine.io v4 over a plain WebSocket.

'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const HOST = '127.0.0.1';

const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ['websocket'] });

io.on('connection', (socket) => {
  socket.on('join', (room) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    socket.emit('joined', room);
  });

  socket.on('leave', (room) => {
    if (typeof room !== 'string') return;
    socket.leave(room);
    socket.emit('left', room);
  });

  socket.on('publish', (msg) => {
    if (msg === null || typeof msg !== 'object' || typeof msg.room !== 'string') return;
    const data = msg.data === undefined ? null : msg.data;
    io.to(msg.room).emit('message', { room: msg.room, data, ts: Date.now() });
  });

  socket.on('ping', () => {
    socket.emit('pong');
  });
});

httpServer.on('error', (err) => {
  console.error(`socketio peer failed: ${err.message}`);
  process.exit(1);
});

httpServer.listen(PORT, HOST, () => {
  console.log(`socketio peer listening on ${HOST}:${PORT}`);
});
