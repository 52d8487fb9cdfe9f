//! The services one Herald node shares between its connections: config,
//! token verification, the room registry, presence, the open connections,
//! and metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::cluster::link::LinkCell;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connection::registry::Registry;
use crate::connection::{Bounds, ConnId};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::rooms::RoomRegistry;
use crate::transport::TransportKind;

/// Shared state of a running node.
pub struct Node {
    pub config: Config,
    /// This node's id, as sent in `welcome`.
    pub id: NodeId,
    pub auth: Authenticator,
    pub rooms: RoomRegistry,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
    /// Every open connection, for draining and node-wide delivery.
    pub connections: Arc<Registry>,
    /// The cluster, or none on a single node.
    pub cluster: Cluster,
    /// The cluster actor's cell, with clustering.
    pub link: Option<Arc<LinkCell>>,
    next_conn: AtomicU64,
    /// Connections holding an [`OpenSlot`].
    open: AtomicUsize,
    /// Accepted sockets whose first request is still being read.
    handshaking: AtomicUsize,
    /// The most connections open at once (`limits.max_connections`, or
    /// what the file limit allows).
    max_open: AtomicUsize,
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

/// Descriptors kept free beyond the connections a node takes by default:
/// they keep `/healthz`, `/readyz`, `/metrics` and the API reachable when
/// connections have taken everything else. An eighth of the file limit, at
/// least 8 and at most [`FD_RESERVE`].
pub const FD_RESERVE: u64 = 64;

/// The connections the file limit leaves room for: the limit, less the
/// descriptors already open, less the reserve.
pub fn connection_capacity() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let reserve = (limit.rlim_cur / 8).clamp(8, FD_RESERVE);
    Some(limit.rlim_cur.saturating_sub(in_use + reserve))
}

/// A place among `limits.max_connections`, held for a connection's lifetime.
pub struct OpenSlot {
    node: Arc<Node>,
    kind: TransportKind,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.node.release_slot(self.kind);
    }
}

impl OpenSlot {
    /// Hands the slot to a connection, which gives it back with
    /// [`Node::release_slot`] when it ends (and holds no guard meanwhile).
    pub fn keep(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again: its node handle
        // is moved out once and dropped here.
        drop(unsafe { std::ptr::read(&this.node) });
    }
}

/// The parts a node is put together from.
pub struct Parts {
    pub id: NodeId,
    pub rooms: RoomRegistry,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Registry>,
    pub cluster: Cluster,
    pub link: Option<Arc<LinkCell>>,
}

/// The node id `config` names, or a fresh random one.
pub fn node_id(config: &Config) -> NodeId {
    if config.server.node_id.is_empty() {
        format!("{:08x}", rand::random::<u32>()).into()
    } else {
        config.server.node_id.as_str().into()
    }
}

impl Node {
    pub fn new(config: Config, parts: Parts) -> Self {
        let Parts { id, rooms, presence, metrics, connections, cluster, link } = parts;
        Self {
            auth: Authenticator::new(&config.auth.jwt_secret),
            id,
            rooms,
            presence,
            metrics,
            connections,
            cluster,
            link,
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            max_open: AtomicUsize::new(match config.limits.max_connections {
                0 => connection_capacity().map_or(usize::MAX, |n| n as usize),
                n => n,
            }),
            sockets: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            config,
        }
    }

    /// Takes a slot for a `kind` connection, or `None` when
    /// [`Self::max_connections`] are open or opening (all transports
    /// together, and the other sockets still in their handshake). Called
    /// by a socket in its handshake.
    pub fn try_open(self: &Arc<Self>, kind: TransportKind) -> Option<OpenSlot> {
        let max = self.max_open.load(Ordering::Relaxed);
        let others = self.handshaking.load(Ordering::Acquire).saturating_sub(1);
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n + others < max).then_some(n + 1)).ok()?;
        self.metrics.connections_open(kind).inc();
        Some(OpenSlot { node: self.clone(), kind })
    }

    /// The most connections open at once: `limits.max_connections`, or
    /// when that is 0, what the file limit allows less a reserve.
    pub fn max_connections(&self) -> usize {
        self.max_open.load(Ordering::Relaxed)
    }

    /// Derives the connection limit from the file limit again, once every
    /// thread and runtime of the node holds its descriptors (when
    /// `limits.max_connections` is 0).
    pub fn measure_capacity(&self) {
        if self.config.limits.max_connections == 0 {
            if let Some(capacity) = connection_capacity() {
                self.max_open.store(capacity as usize, Ordering::Relaxed);
            }
        }
    }

    /// Counts a socket in its handshake until the returned guard drops.
    pub fn handshake_started(self: &Arc<Self>) -> HandshakeGuard {
        self.handshaking.fetch_add(1, Ordering::AcqRel);
        HandshakeGuard { node: self.clone() }
    }

    /// The bounds of every connection's outbound queue.
    pub fn bounds(&self) -> Bounds {
        Bounds::new(self.config.limits.outbound_queue, self.config.limits.outbound_queue_bytes)
    }

    /// Gives back a slot a connection kept (see [`OpenSlot::keep`]).
    pub fn release_slot(&self, kind: TransportKind) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_open(kind).dec();
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
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

    /// The id clients see for `conn`: `<node>-<n>`, unique across nodes.
    pub fn conn_label(&self, conn: ConnId) -> String {
        format!("{}-{}", self.id, conn.0)
    }

    /// Whether `/readyz` reports ready: not draining, and with clustering,
    /// the backplane up and this node's heartbeat going through.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.cluster.is_ready()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
