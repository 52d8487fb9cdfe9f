//! A running node as its transports and server see it: the [`Services`]
//! its connections and the API share, the cluster link, and what admission
//! and shutdown count (sockets, handshakes, readiness, draining).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::connection::services::{OpenSlot, Services};
use crate::delivery::ConnId;
use crate::ids::NodeId;
use crate::link::LinkHandle;
use crate::metrics::TransportKind;

/// Shared state of a running node.
pub struct Node {
    pub services: Arc<Services>,
    /// The cluster link, with clustering.
    pub link: Option<LinkHandle>,
    next_conn: AtomicU64,
    /// Accepted sockets whose first request is still being read.
    handshaking: AtomicUsize,
    /// Accepted TCP connections not yet closed (WebSocket or plain HTTP).
    sockets: AtomicUsize,
    ready: AtomicBool,
    draining: AtomicBool,
}

/// An accepted socket, counted until it closes.
pub struct SocketGuard {
    node: Arc<Node>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.node.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket whose first request is being read, counted until it drops.
pub struct HandshakeGuard {
    node: Arc<Node>,
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.node.handshaking.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The node id `config` names, or a fresh random one.
pub(crate) fn node_id(config: &Config) -> NodeId {
    if config.server.node_id.is_empty() {
        format!("{:08x}", rand::random::<u32>()).into()
    } else {
        config.server.node_id.as_str().into()
    }
}

impl Node {
    pub fn new(services: Arc<Services>, link: Option<LinkHandle>) -> Self {
        Self {
            services,
            link,
            next_conn: AtomicU64::new(1),
            handshaking: AtomicUsize::new(0),
            sockets: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
        }
    }

    /// Takes a slot for a `kind` connection, or `None` when the connection
    /// limit is reached (all transports together, and the other sockets
    /// still in their handshake). Called by a socket in its handshake.
    pub fn try_open(&self, kind: TransportKind) -> Option<OpenSlot> {
        let others = self.handshaking.load(Ordering::Acquire).saturating_sub(1);
        self.services.try_open(kind, others)
    }

    /// Counts a socket in its handshake until the returned guard drops.
    pub fn handshake_started(self: &Arc<Self>) -> HandshakeGuard {
        self.handshaking.fetch_add(1, Ordering::AcqRel);
        HandshakeGuard { node: self.clone() }
    }

    /// Counts an accepted socket until the returned guard drops.
    pub fn socket_opened(self: &Arc<Self>) -> SocketGuard {
        self.sockets.fetch_add(1, Ordering::AcqRel);
        SocketGuard { node: self.clone() }
    }

    /// Accepted sockets not yet closed.
    pub fn open_sockets(&self) -> usize {
        self.sockets.load(Ordering::Acquire)
    }

    /// Starts a graceful drain: not ready, no new connections.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.set_ready(false);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A fresh connection id.
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether `/readyz` reports ready: not draining, and with clustering,
    /// the backplane up and this node's heartbeat going through.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.services.cluster.is_ready()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
