//! Transports: how a connection's frames look on its socket, and how its
//! socket is taken over from HTTP.
//!
//! A connection is one actor type, [`Connection<T>`](crate::connection::core::Connection),
//! whatever carries it: rooms, presence, authentication, rate limits and
//! metrics live there once. A transport is the `T` it is instantiated with:
//! how the client's bytes become frames, and how a close looks on the wire.
//!
//! - [`handshake`]: every accepted socket's first request, read by Herald
//!   itself: `/ws` and `/sse` become connections that own their socket, the
//!   rest goes to actix-web.
//! - [`ws`]: WebSocket (`GET /ws`): frames, fragments, control frames, limits.
//! - [`sse`]: Server-Sent Events (`GET /sse`): read-only subscriptions to rooms.
//! - [`socketio`]: Socket.IO clients (`/socket.io/`): Engine.IO over a
//!   WebSocket or long polling, Herald's frames as events.
//! - [`admission`]: what every transport checks before it opens a connection.
//! - [`replay`]: hands a socket whose request head was already read to actix-http.
//! - [`http`]: the plain HTTP routes (`/healthz`, `/readyz`, `/metrics`).
//! - [`demo`]: the browser demo and the JavaScript client, when `demo.enabled`.

pub(crate) mod admission;
pub(crate) mod demo;
pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod replay;
pub(crate) mod socketio;
pub(crate) mod sse;
pub(crate) mod ws;

#[cfg(test)]
mod tests {
    use super::handshake::Handshaking;
    use super::sse::Sse;
    use super::ws::Ws;
    use crate::connection::core::Connection;
    use crate::connection::task::Task;

    /// Every idle connection holds one boxed `Task` in its worker's table
    /// and one outbox; a million of them make each byte here a megabyte.
    /// The bounds keep each in its allocator size class (160 and 96 bytes
    /// with the reference count). Growing them is a decision, not an
    /// accident: BENCHMARKS.md has where each byte goes.
    #[test]
    fn connection_state_stays_small() {
        let ws = std::mem::size_of::<Task<Ws>>();
        let sse = std::mem::size_of::<Task<Sse>>();
        let sio = std::mem::size_of::<Task<super::socketio::Sio>>();
        let conn = std::mem::size_of::<Connection<Ws>>();
        let outbox = crate::delivery::outbox::shared_size();
        let handshaking = std::mem::size_of::<Handshaking>();
        println!(
            "Task<Ws>: {ws} bytes, Task<Sse>: {sse} bytes, Task<Sio>: {sio} bytes, Connection<Ws>: {conn} bytes, \
             outbox: {outbox} bytes, a socket in its handshake: {handshaking} bytes"
        );
        assert!(handshaking <= 80, "Handshaking grew to {handshaking} bytes");
        assert!(ws <= 160, "Task<Ws> grew to {ws} bytes");
        assert!(sse <= 160, "Task<Sse> grew to {sse} bytes");
        // A Socket.IO session's own state (its pid, its namespace, what it
        // holds while it polls) takes it to the next size class, 192.
        assert!(sio <= 192, "Task<Sio> grew to {sio} bytes");
        assert!(outbox <= 80, "the outbox grew to {outbox} bytes");
    }
}
