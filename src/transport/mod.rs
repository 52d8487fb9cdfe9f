//! Transports: how frames reach a client's socket.
//!
//! A connection is one actor type, [`Connection<T>`](crate::connection::core::Connection),
//! whatever carries it: rooms, presence, authentication, rate limits,
//! heartbeats and metrics live there once. A transport is the [`Transport`]
//! it is instantiated with: the actor context that owns the socket, and how a
//! frame, a ping and a close are written to it. Adding one (long-polling,
//! WebTransport) means a new `Transport` and a route, nothing copied.
//!
//! - [`ws`]: WebSocket (`GET /ws`): duplex, the connection actor is driven by its socket.
//! - [`sse`]: Server-Sent Events (`GET /sse`): read-only subscriptions to rooms.
//! - [`admission`]: what every transport checks before it opens a connection.
//! - [`frame_guard`]: refuses oversized WebSocket frames from their headers.
//! - [`http`]: the plain HTTP routes (`/healthz`, `/readyz`, `/metrics`).

pub mod admission;
pub mod frame_guard;
pub mod http;
pub mod sse;
pub mod ws;

use actix::dev::ToEnvelope;
use actix::{ActorContext, AsyncContext};

use crate::connection::core::Connection;
use crate::connection::{Control, Outbound};
use crate::protocol::{Encoded, ServerKind};

/// Which transport carries a connection: the `transport` label of the
/// connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Sse,
}

impl TransportKind {
    pub const ALL: [TransportKind; 2] = [Self::WebSocket, Self::Sse];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
        }
    }
}

/// The client is not taking frames as fast as they come: the connection's
/// queue toward its socket is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// How frames reach one kind of socket. Implemented by a connection's
/// transport-specific state, which the core keeps in `Connection::transport`.
pub trait Transport: Sized + Unpin + 'static {
    /// The actor context that owns the socket.
    type Context: ActorContext + AsyncContext<Connection<Self>> + ToEnvelope<Connection<Self>, Outbound>;

    const KIND: TransportKind;

    /// Whether the client sends frames and answers pings. A connection that
    /// cannot be heard from is never closed for silence; a dead peer shows
    /// up as a failed write instead.
    const DUPLEX: bool;

    /// Bounds the connection's mailbox (`limits.outbound_queue`).
    fn set_mailbox_capacity(ctx: &mut Self::Context, capacity: usize);

    /// Whether frames of `kind` are written to this transport's clients.
    /// Read once per connection into its [`Control`], which rooms consult
    /// before they queue anything.
    fn carries(kind: ServerKind) -> bool {
        let _ = kind;
        true
    }

    /// Writes one frame, or reports that the client is not keeping up.
    fn write(&mut self, ctx: &mut Self::Context, frame: Encoded) -> Result<(), Full>;

    /// Writes the heartbeat.
    fn ping(&mut self, ctx: &mut Self::Context) -> Result<(), Full>;

    /// Ends the connection with `code` and `reason` where the transport can
    /// say them, and stops the actor.
    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str);

    /// Runs once the connection has started and is authenticated, before its
    /// first heartbeat: where a transport subscribes to what its request asked.
    fn opened(conn: &mut Connection<Self>, ctx: &mut Self::Context) {
        let _ = (conn, ctx);
    }

    /// Runs when the actor has stopped. Whatever ends together with the
    /// HTTP response body (before actix-http closes the socket) must
    /// [`Control::release`] the socket: a transport whose actor is its body
    /// does it here.
    fn stopped(&mut self, control: &Control);
}
