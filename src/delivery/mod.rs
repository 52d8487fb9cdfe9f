//! What rooms, presence and the cluster link deliver to: a connection as
//! they know it ([`Member`]: its id, its user, its [`Outbox`]), and the
//! registry of a node's open connections.
//!
//! Nothing here waits on a connection: a delivery is one non-blocking write,
//! or a push onto a bounded queue. A frame that does not fit means the
//! client is not reading fast enough: the connection becomes a slow consumer
//! (close 4008, or a dropped socket when even that cannot get through), and
//! that is the connection's problem, never the room's. The connection that
//! owns an outbox is woken through its worker's [`Wakeups`].

pub(crate) mod outbox;
pub(crate) mod polling;
pub(crate) mod registry;
pub(crate) mod wake;

use std::fmt;

use crate::ids::UserId;

pub use outbox::{Bounds, Delivery, Outbox};
pub(crate) use outbox::ConnMsg;
pub(crate) use registry::Registry;
pub(crate) use wake::{Place, Wakeups};

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
    pub user: UserId,
    pub outbox: Outbox,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member").field("conn", &self.conn).field("user", &self.user).finish()
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
    use crate::metrics::TransportKind;

    /// An outbox that keeps every frame as text (at most `capacity` at once).
    pub fn collector(capacity: usize) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        collector_with(capacity, |_| true)
    }

    /// An outbox that takes replies and nothing of its rooms' traffic
    /// (`message`, `typing`, `user_joined`, `user_left`), which it counts as
    /// delivered: a member of a big room whose joins cost nothing to
    /// record.
    pub fn deaf() -> Outbox {
        let room_traffic = [ServerKind::Message, ServerKind::Typing, ServerKind::UserJoined, ServerKind::UserLeft];
        collector_with(0, move |kind| !room_traffic.contains(&kind)).0
    }

    /// [`collector`] for a transport that carries only the kinds `carries` accepts.
    pub(crate) fn collector_with(capacity: usize, carries: impl Fn(ServerKind) -> bool) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        Outbox::recorder(TransportKind::WebSocket, carries, capacity)
    }
}
