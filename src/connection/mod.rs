//! What every transport's connection shares: its id, the outbox that rooms and
//! presence deliver to, and the non-blocking delivery rule.
//!
//! Rooms and presence never wait on a connection: they `try_send` into its
//! bounded mailbox. A full mailbox means the client is not reading fast enough,
//! and that is the connection's problem, never the room's.

pub mod session;

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;

use crate::protocol::Encoded;

/// A connection's id, unique on this node. Clients see it as `<node>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What rooms and presence send to a connection.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Outbound {
    /// A serialised frame to write to the client.
    Frame(Encoded),
}

/// The bounded mailbox of a connection actor.
pub type Outbox = Recipient<Outbound>;

/// How a delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The connection's queue is full: a slow consumer.
    Full,
    /// The connection is gone.
    Closed,
}

/// Queues `frame` for a connection without ever waiting or growing its queue
/// past its bound.
pub fn deliver(outbox: &Outbox, frame: Encoded) -> Delivery {
    match outbox.try_send(Outbound::Frame(frame)) {
        Ok(()) => Delivery::Queued,
        Err(SendError::Full(_)) => Delivery::Full,
        Err(SendError::Closed(_)) => Delivery::Closed,
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

/// Test doubles for code that delivers to connections.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use actix::prelude::*;
    use parking_lot::Mutex;

    use super::{Outbound, Outbox};

    /// Records every frame delivered to it, as text.
    pub(crate) struct Collector {
        frames: Arc<Mutex<Vec<String>>>,
        capacity: usize,
    }

    impl Actor for Collector {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(self.capacity);
        }
    }

    impl Handler<Outbound> for Collector {
        type Result = ();
        fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
            let Outbound::Frame(frame) = msg;
            self.frames.lock().push(frame.text.to_string());
        }
    }

    /// A live outbox (must be called inside an actix system) and what it received.
    pub(crate) fn collector(capacity: usize) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let addr = Collector { frames: frames.clone(), capacity }.start();
        (addr.recipient(), frames)
    }
}
