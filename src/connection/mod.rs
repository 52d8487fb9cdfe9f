//! What every transport's connection shares: the connection actor itself
//! ([`core`]), its id, the outbox that rooms and presence deliver to, the
//! non-blocking delivery rule, and the registry of open connections.
//!
//! Rooms and presence never wait on a connection: they `try_send` into its
//! bounded mailbox. A full mailbox means the client is not reading fast
//! enough: the connection becomes a slow consumer (close 4008, or a dropped
//! socket when even that cannot get through; see [`control`]), and that is
//! the connection's problem, never the room's.

pub mod control;
pub mod core;
pub mod rate;
pub mod registry;
pub mod session;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::metrics::{Fault, Metrics};
use crate::protocol::{close, Encoded, ServerKind};
pub use control::Control;

/// How long a slow consumer gets to take its close frame before its socket is shut.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(2);

/// A connection's id, unique on this node. Clients see it as `<node>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What rooms, presence and the server send to a connection.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Outbound {
    /// A serialised frame to write to the client.
    Frame(Encoded),
    /// Close the connection with this code and reason.
    Close { code: u16, reason: &'static str },
    /// Panic while handling this (fault injection).
    Crash,
}

/// How a delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The connection's queue is full: it is now a slow consumer, on its way out.
    Full,
    /// The connection is gone.
    Closed,
}

/// Where frames for one connection go: its bounded mailbox, plus the
/// [`Control`] that still works when the mailbox is full.
#[derive(Clone)]
pub struct Outbox {
    tx: Recipient<Outbound>,
    control: Arc<Control>,
}

impl Outbox {
    pub fn new(tx: Recipient<Outbound>, control: Arc<Control>) -> Self {
        Self { tx, control }
    }

    /// Queues `frame` without ever waiting or growing the queue past its bound.
    /// A full queue turns the connection into a slow consumer. A frame the
    /// connection's transport does not carry counts as queued, and is not.
    pub fn deliver(&self, frame: Encoded, metrics: &Metrics) -> Delivery {
        if self.control.is_slow() {
            metrics.frames_dropped(Fault::SlowConsumer, 1);
            return Delivery::Full;
        }
        if !self.control.carries(frame.kind) {
            return Delivery::Queued;
        }
        // Counted before the send: the connection may take the frame at once.
        self.control.queued_one();
        match self.tx.try_send(Outbound::Frame(frame)) {
            Ok(()) => Delivery::Queued,
            Err(SendError::Full(_)) => {
                self.control.took_one();
                metrics.frames_dropped(Fault::SlowConsumer, 1);
                self.slow_consumer(metrics);
                Delivery::Full
            }
            Err(SendError::Closed(_)) => {
                self.control.took_one();
                Delivery::Closed
            }
        }
    }

    /// Frames waiting in the connection's outbound queue.
    pub fn queue_depth(&self) -> u32 {
        self.control.queue_depth()
    }

    /// Whether the connection's transport writes frames of `kind`.
    pub fn carries(&self, kind: ServerKind) -> bool {
        self.control.carries(kind)
    }

    /// Closes the connection with `code`, even when its queue is full: the
    /// close is the one message allowed past the bound.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.tx.do_send(Outbound::Close { code, reason });
    }

    /// Makes the connection panic while it handles this (fault injection).
    pub fn crash(&self) {
        self.tx.do_send(Outbound::Crash);
    }

    /// Turns the connection into a slow consumer: counted once, sent close
    /// 4008, and its socket shut down if it has not ended after the grace.
    pub fn slow_consumer(&self, metrics: &Metrics) {
        if !self.control.mark_slow() {
            return;
        }
        metrics.connection_dropped(Fault::SlowConsumer);
        self.close(close::SLOW_CONSUMER, close::SLOW_CONSUMER_REASON);
        let control = self.control.clone();
        // Runs on whichever tokio runtime the delivering actor lives on.
        tokio::spawn(async move {
            tokio::time::sleep(SLOW_CONSUMER_GRACE).await;
            control.drop_socket();
        });
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

    use super::{Control, Outbound, Outbox};

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
            match msg {
                Outbound::Frame(frame) => self.frames.lock().push(frame.text.to_string()),
                Outbound::Close { code, .. } => self.frames.lock().push(format!("close {code}")),
                Outbound::Crash => self.frames.lock().push("crash".into()),
            }
        }
    }

    /// A live outbox (must be called inside an actix system) and what it received.
    pub(crate) fn collector(capacity: usize) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        collector_with(capacity, Control::default())
    }

    /// [`collector`] with its own [`Control`].
    pub(crate) fn collector_with(capacity: usize, control: Control) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let addr = Collector { frames: frames.clone(), capacity }.start();
        (Outbox::new(addr.recipient(), Arc::new(control)), frames)
    }
}
