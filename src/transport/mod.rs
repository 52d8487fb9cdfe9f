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
//! - [`admission`]: what every transport checks before it opens a connection.
//! - [`replay`]: hands a socket whose request head was already read to actix-http.
//! - [`http`]: the plain HTTP routes (`/healthz`, `/readyz`, `/metrics`).

pub mod admission;
pub mod handshake;
pub mod http;
pub mod replay;
pub mod sse;
pub mod ws;

use bytes::Bytes;

use crate::connection::core::Connection;
use crate::protocol::ServerKind;
pub use crate::metrics::TransportKind;

/// What one kind of socket does differently. Implemented by a connection's
/// transport-specific state, which the core keeps in `Connection::transport`.
pub trait Transport: Sized + Unpin + 'static {
    const KIND: TransportKind;

    /// Whether frames of `kind` are written to this transport's clients.
    /// Read once per connection into its outbox, which rooms consult before
    /// they queue anything.
    fn carries(kind: ServerKind) -> bool {
        let _ = kind;
        true
    }

    /// The last bytes of a connection closed with `code` and `reason`.
    fn close_bytes(code: u16, reason: &str) -> Bytes;

    /// Runs once the connection is open, after `welcome`: where a transport
    /// subscribes to what its request asked.
    fn opened(conn: &mut Connection<Self>) {
        let _ = conn;
    }

    /// Handles bytes from the client, as many whole frames as it can while
    /// the connection is neither closing nor waiting for an answer; returns
    /// how many bytes it used. The rest is given again with what follows.
    fn on_input(conn: &mut Connection<Self>, input: &mut [u8]) -> usize;
}
