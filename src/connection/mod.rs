//! What every transport's connection shares: the connection actor's core
//! ([`core`]) and its driver ([`task`]), its id, the [`Outbox`] that rooms
//! and presence deliver to, the heartbeat [`sweep`], and the registry of open
//! connections.
//!
//! Rooms and presence never wait on a connection: a delivery is one
//! non-blocking write, or a push onto a bounded queue. A frame that does not
//! fit means the client is not reading fast enough: the connection becomes a
//! slow consumer (close 4008, or a dropped socket when even that cannot get
//! through), and that is the connection's problem, never the room's.

pub mod core;
pub mod outbox;
pub mod rate;
pub mod registry;
pub mod session;
pub mod sweep;
pub mod task;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use outbox::{Bounds, Delivery, Outbox};

/// How long a closing connection gets to have its close frame taken (and
/// the client's close read) before its socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A connection's id, unique on this node. Clients see it as `<node>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connection as a room or presence knows it.
#[derive(Clone)]
pub struct Member {
    pub conn: ConnId,
    pub user: Arc<str>,
    pub outbox: Outbox,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member").field("conn", &self.conn).field("user", &self.user).finish()
    }
}

/// The connections' clock: milliseconds since the process started.
pub mod clock {
    pub fn now_ms() -> u64 {
        super::rate::now_us() / 1000
    }
}

/// Outboxes without sockets, for tests and benches of code that delivers
/// to connections.
#[doc(hidden)]
pub mod testing {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::Outbox;
    use crate::protocol::ServerKind;
    use crate::transport::TransportKind;

    /// An outbox that keeps every frame as text (at most `capacity` at once).
    pub fn collector(capacity: usize) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        collector_with(capacity, |_| true)
    }

    /// [`collector`] for a transport that carries only the kinds `carries` accepts.
    pub fn collector_with(capacity: usize, carries: impl Fn(ServerKind) -> bool) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        Outbox::recorder(TransportKind::WebSocket, carries, capacity)
    }
}
