//! [`Services`]: what a connection uses of its node (config, token
//! verification, rooms, presence, the open connections, the cluster and
//! metrics), and the connection limit it holds a place in ([`OpenSlot`]).
//! The server API uses the same handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::future::Future;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::delivery::{Bounds, ConnId, Registry};
use crate::ids::{NodeId, RoomName};
use crate::protocol::UserList;
use crate::rpc::CallError;
use crate::metrics::{Metrics, TransportKind};
use crate::presence::Presence;
use crate::cluster::Channel;
use crate::rooms::{HistoryPage, RoomRegistry};

/// The services one node shares between its connections.
pub struct Services {
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
    /// Socket.IO sessions that poll, and those kept for recovery.
    pub(crate) socketio: super::socketio::Sessions,
    /// Connections holding an [`OpenSlot`].
    open: AtomicUsize,
    /// The most connections open at once (`limits.max_connections`, or
    /// what the file limit allows).
    max_open: AtomicUsize,
}

/// A place among `limits.max_connections`, held for a connection's lifetime.
pub struct OpenSlot {
    services: Arc<Services>,
    kind: TransportKind,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.services.release_slot(self.kind);
    }
}

impl OpenSlot {
    /// Hands the slot to a connection, which gives it back with
    /// [`Services::release_slot`] when it ends (and holds no guard meanwhile).
    pub fn keep(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again: its handle is
        // moved out once and dropped here.
        drop(unsafe { std::ptr::read(&this.services) });
    }
}

/// Descriptors kept free beyond the connections a node takes by default:
/// they keep `/healthz`, `/readyz`, `/metrics` and the API reachable when
/// connections have taken everything else. An eighth of the file limit, at
/// least 8 and at most [`FD_RESERVE`].
const FD_RESERVE: u64 = 64;

/// The connections the file limit leaves room for: the limit, less the
/// descriptors already open, less the reserve.
pub(crate) fn connection_capacity() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let reserve = (limit.rlim_cur / 8).clamp(8, FD_RESERVE);
    Some(limit.rlim_cur.saturating_sub(in_use + reserve))
}

impl Services {
    pub fn new(
        config: Config,
        id: NodeId,
        rooms: RoomRegistry,
        presence: Presence,
        metrics: Arc<Metrics>,
        connections: Arc<Registry>,
        cluster: Cluster,
    ) -> Self {
        Self {
            auth: Authenticator::new(&config.auth.jwt_secret),
            id,
            rooms,
            presence,
            metrics,
            connections,
            cluster,
            socketio: super::socketio::Sessions::default(),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(match config.limits.max_connections {
                0 => connection_capacity().map_or(usize::MAX, |n| n as usize),
                n => n,
            }),
            config,
        }
    }

    /// Takes a slot for a `kind` connection, or `None` when
    /// [`Self::max_connections`] are open or opening: open connections of
    /// every transport, plus `opening`, the other sockets still in their
    /// handshake.
    pub fn try_open(self: &Arc<Self>, kind: TransportKind, opening: usize) -> Option<OpenSlot> {
        let max = self.max_open.load(Ordering::Relaxed);
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n + opening < max).then_some(n + 1)).ok()?;
        self.metrics.connections_open(kind).inc();
        Some(OpenSlot { services: self.clone(), kind })
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

    /// The bounds of every connection's outbound queue.
    pub fn bounds(&self) -> Bounds {
        Bounds::new(self.config.limits.outbound_queue, self.config.limits.outbound_queue_bytes)
    }

    /// The id clients see for `conn`: `<node>-<n>`, unique across nodes.
    pub fn conn_label(&self, conn: ConnId) -> String {
        format!("{}-{}", self.id, conn.0)
    }

    /// The users in `room`, as `presence` replies and the presence API list
    /// them. On a single node, the room's own list, built once per change
    /// of its members and shared by every ask until the next; with
    /// clustering, the cluster directory's, which already holds a user whose
    /// join another node has confirmed.
    ///
    /// A room whose namespace does not list users answers with its count
    /// alone (`users` is `[]`): the room's own number, or the number the
    /// directory counts (no list crosses the network).
    pub fn room_presence(&self, room: RoomName) -> impl Future<Output = Result<UserList, CallError>> + 'static {
        let local = (!self.cluster.is_clustered()).then(|| self.rooms.presence(room.clone()));
        let listed = self.rooms.namespaces().resolve(&room).presence;
        let presence = self.presence.clone();
        async move {
            if let Some(Some(list)) = match local {
                Some(asked) => Some(asked.await),
                None => None,
            } {
                return Ok(list);
            }
            match listed {
                true => presence.room_users(room).await.map(|users| UserList::new(&users)),
                false => presence.room_count(room).await.map(UserList::unlisted),
            }
        }
    }

    /// Up to `limit` messages of `room`'s history after `since`: this
    /// node's, or with clustering the one Redis keeps.
    pub fn room_history(
        &self,
        room: RoomName,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, ()>> + 'static {
        let local = match self.cluster.membership() {
            None => Ok(self.rooms.history(room.clone(), since, limit)),
            Some(cluster) => Err(cluster.clone()),
        };
        async move {
            match local {
                Ok(page) => page.await.map_err(drop),
                Err(cluster) => {
                    let read = cluster.relay.history(&Channel::Room(room.clone()), since, limit);
                    let recorded = cluster.checked("history read", read).await.map_err(drop)?;
                    Ok(HistoryPage::of(&room, recorded))
                }
            }
        }
    }
}
