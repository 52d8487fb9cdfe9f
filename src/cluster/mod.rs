//! Clustering: nodes that act as one, relayed through Redis pub/sub.
//!
//! - [`codec`]: the versioned envelope every node-to-node message travels in.
//! - [`backplane`]: the Redis connections, reconnecting and re-subscribing
//!   on their own, with commands kept in order.
//! - [`relay`]: the [`Relay`] trait (envelopes between nodes), in memory and over Redis.
//! - [`directory`]: the [`Directory`] trait (cluster-wide presence and node
//!   liveness), in memory and in Redis.
//! - The cluster link ([`crate::link`]), the actor above rooms and presence,
//!   hands what arrives to them and keeps the node's membership.
//!
//! [`Cluster`] is the handle rooms, presence, connections and the API use.
//! On a single node (`cluster.enabled = false`) it is [`Cluster::single`]:
//! it never touches Redis, what it is told goes nowhere, and queries are
//! left to the node's own answers. With clustering it holds this node's
//! [`Membership`], which the link and each room's cluster side use whole.
//!
//! # How the parts meet
//!
//! - **Rooms.** A node subscribes to a room's channel while it has members
//!   in the room. A publish is numbered and published in one Redis script
//!   (the room's one `seq` authority), and every node, the origin
//!   included, delivers it from the channel: the channel's order is the
//!   room's order, so each client sees `seq` strictly increasing. The origin
//!   acks its publisher with the number the script returned.
//! - **Presence.** Each node writes its own entries (user in room, user
//!   online) to the [`Directory`] and tells the room's channel when a user
//!   arrives in or leaves a room on it; each room keeps which users other
//!   nodes have in it, so `joined.users` and `user_joined` / `user_left`
//!   count users across nodes. Queries (`presence`, `status`, the API) read
//!   the directory.
//! - **Direct and broadcast** go to the local connections at once and to
//!   the other nodes through the user's channel (subscribed while the user
//!   has a connection here) or the broadcast channel; a node drops its own
//!   echoes of those.
//! - **Liveness.** The [link](crate::link) heartbeats the directory and watches the
//!   other nodes: a node whose heartbeat lapses (`cluster.node_ttl_ms`) is
//!   dropped from every local room, with `user_left` for its users, and
//!   its entries are swept.
//! - **Outages.** While Redis is away, calls fail at once (counted in
//!   `herald_cluster_relay_errors_total`), rooms number and deliver locally,
//!   and `/readyz` answers 503. When it returns, the link re-registers the
//!   node and every room and the presence registry re-subscribe and rewrite
//!   their entries.

pub mod backplane;
pub mod codec;
pub mod directory;
pub mod relay;
mod script;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codec::{Body, Envelope};
pub(crate) use directory::Directory;
pub(crate) use relay::{Channel, Relay};
use relay::{Pending, RelayError};
pub use relay::{Keep, Recorded};

use crate::config::ClusterConfig;
use crate::ids::{NodeId, RoomName, UserId};
use crate::metrics::Metrics;

/// How long start-up waits for Redis before going on without it.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Connects this node, `node`, to the cluster `config` describes; must run
/// on the actors' runtime. A Redis that is not there yet is waited for in
/// the background (the node is not ready until then); only an unusable
/// `redis_url` fails.
pub(crate) async fn join(
    config: &ClusterConfig,
    node: NodeId,
    metrics: Arc<Metrics>,
) -> Result<Arc<Membership>, String> {
    let backplane = backplane::Backplane::connect(&config.redis_url, CONNECT_WAIT)
        .await
        .map_err(|e| format!("cannot use cluster.redis_url {:?}: {e}", config.redis_url))?;
    let backplane = Arc::new(backplane);
    let relay = Arc::new(relay::RedisRelay::new(backplane.clone()));
    let directory = Arc::new(directory::RedisDirectory::new(backplane));
    tracing::info!(%node, redis = %config.redis_url, "cluster: joining");
    Ok(Membership::new(node, relay, directory, metrics, Duration::from_millis(config.node_ttl_ms)))
}

/// The cluster, as the rest of the node reaches it: this node's
/// [`Membership`], or none on a single node, where every call does nothing
/// and every query answers `None` (the caller answers from this node).
#[derive(Clone, Default)]
pub struct Cluster(Option<Arc<Membership>>);

impl From<Option<Arc<Membership>>> for Cluster {
    fn from(membership: Option<Arc<Membership>>) -> Self {
        Self(membership)
    }
}

impl Cluster {
    /// A node on its own.
    pub fn single() -> Self {
        Self(None)
    }

    /// This node's membership, with clustering.
    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.0.as_ref()
    }

    pub fn is_clustered(&self) -> bool {
        self.0.is_some()
    }

    /// The membership while the backplane is up: when queries and numbered
    /// publishes can go through the cluster.
    fn reachable(&self) -> Option<&Arc<Membership>> {
        self.0.as_ref().filter(|m| m.is_connected())
    }

    /// Whether Redis is reachable; `None` on a single node, which has none.
    pub fn redis_connected(&self) -> Option<bool> {
        self.0.as_ref().map(|m| m.is_connected())
    }

    /// Whether the node can serve as far as the cluster goes: a single
    /// node always can, a clustered one while it is a working member.
    pub fn is_ready(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_healthy())
    }

    /// `user` has its first connection on this node.
    pub fn user_online(&self, user: &UserId) {
        if let Some(m) = &self.0 {
            m.user_online(user);
        }
    }

    /// `user` has no connection left on this node.
    pub fn user_offline(&self, user: &UserId) {
        if let Some(m) = &self.0 {
            m.user_offline(user);
        }
    }

    /// This node's online users are exactly `users` (after an outage):
    /// rewrites its entries and takes their channels again.
    pub fn users_online(&self, users: impl Iterator<Item = UserId>) {
        let Some(m) = &self.0 else { return };
        let users: Vec<UserId> = users.collect();
        m.background("re-sync", m.directory.replace_users(&m.node, users.clone()));
        for user in users {
            m.background("subscribe", m.relay.subscribe(&Channel::User(user)));
        }
    }

    /// `room` has no member left on this node.
    pub fn room_retired(&self, room: &RoomName) {
        if let Some(m) = &self.0 {
            m.room_retired(room);
        }
    }

    /// Sends a `direct` frame to `user`'s connections on the other nodes.
    pub fn direct(&self, user: &UserId, frame: &str) {
        if let Some(m) = &self.0 {
            m.direct(user, frame);
        }
    }

    /// Sends a `broadcast` frame to every connection on the other nodes.
    pub fn broadcast(&self, frame: &str) {
        if let Some(m) = &self.0 {
            m.broadcast(frame);
        }
    }

    /// The users in `room` on every live node, while the cluster can say.
    pub fn room_users(&self, room: &RoomName) -> Option<impl Future<Output = Result<Vec<UserId>, RelayError>> + Send + 'static> {
        self.reachable().map(|m| m.room_users(room))
    }

    /// How many distinct users `room` has on every live node, while the cluster can say.
    pub fn room_count(&self, room: &RoomName) -> Option<Pending<usize>> {
        self.reachable().map(|m| m.checked("presence count", m.directory.room_count(room)))
    }

    /// Keeps Socket.IO session `pid`'s record in Redis for `ttl`, in the
    /// background, while the cluster is reachable.
    pub fn keep_session(&self, pid: u64, record: String, ttl: Duration) {
        if let Some(m) = self.reachable() {
            m.background("socket.io session", m.directory.keep_session(pid, record, ttl));
        }
    }

    /// Takes Socket.IO session `pid`'s record from Redis; `None` on a
    /// single node, and while the cluster is unreachable.
    pub fn take_session(&self, pid: u64) -> Option<Pending<Option<String>>> {
        self.reachable().map(|m| m.checked("socket.io session", m.directory.take_session(pid)))
    }

    /// Whether each of `users` is online on a live node, while the cluster can say.
    pub fn online(&self, users: Vec<UserId>) -> Option<Pending<Vec<bool>>> {
        self.reachable().map(|m| m.online(users))
    }

    /// Numbers and publishes a server message to `room` for the other
    /// nodes (this one has no member in it), while the cluster can;
    /// `floor` is the last number this node knows of, `keep` what the
    /// room's history keeps.
    pub fn publish_elsewhere(
        &self,
        room: &RoomName,
        from: &UserId,
        data: &str,
        floor: u64,
        keep: Keep,
    ) -> Option<Pending<u64>> {
        let m = self.reachable()?;
        let body = Body::Message {
            room: room.clone(),
            from: from.clone(),
            data: data.to_owned(),
            ts: crate::protocol::now_ms(),
            token: m.token(),
            except: None,
        };
        Some(m.publish_sequenced(room, body, floor, keep))
    }

    /// Runs `task` where the cluster's background calls run; on a single
    /// node, nowhere.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Some(m) = &self.0 {
            m.spawn(task);
        }
    }

    /// Leaves the cluster on purpose, so the other nodes need not wait for
    /// this one's heartbeat to lapse; waits at most `wait`.
    pub async fn depart(&self, wait: Duration) {
        let Some(m) = &self.0 else { return };
        let depart = m.directory.depart(&m.node);
        if !matches!(tokio::time::timeout(wait, depart).await, Ok(Ok(()))) {
            tracing::warn!("cluster: could not leave cleanly; the other nodes drop this one when its heartbeat lapses");
        }
    }
}

/// This node's part in a cluster: what the rest of the node uses to reach
/// the other nodes.
pub struct Membership {
    /// This node's id, the `origin` of its envelopes.
    pub node: NodeId,
    pub relay: Arc<dyn Relay>,
    pub directory: Arc<dyn Directory>,
    pub metrics: Arc<Metrics>,
    /// `cluster.node_ttl_ms`.
    pub ttl: Duration,
    tokens: AtomicU64,
    /// A call failed since the link last re-synced: what it wrote may be missing.
    dirty: AtomicBool,
    /// When the last heartbeat went through (ms since the epoch; 0: never).
    heartbeat_ms: AtomicU64,
    runtime: tokio::runtime::Handle,
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Membership {
    /// Must be called on the actors' runtime, where background calls run.
    pub fn new(
        node: NodeId,
        relay: Arc<dyn Relay>,
        directory: Arc<dyn Directory>,
        metrics: Arc<Metrics>,
        ttl: Duration,
    ) -> Arc<Self> {
        let runtime = tokio::runtime::Handle::current();
        Arc::new(Self {
            node,
            relay,
            directory,
            metrics,
            ttl,
            tokens: AtomicU64::new(1),
            dirty: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            runtime,
        })
    }

    /// Whether the backplane is up.
    pub fn is_connected(&self) -> bool {
        self.relay.is_connected() && self.directory.is_connected()
    }

    /// Whether this node is a working member of the cluster: the backplane
    /// is up and its heartbeat went through within the last half ttl (so
    /// the other nodes do not take it for dead).
    pub fn is_healthy(&self) -> bool {
        let last = self.heartbeat_ms.load(Ordering::Acquire);
        let fresh = crate::protocol::now_ms().saturating_sub(last) < self.ttl.as_millis() as u64 / 2;
        self.is_connected() && last > 0 && fresh
    }

    /// Records a heartbeat that went through.
    pub fn heartbeat_done(&self) {
        self.heartbeat_ms.store(crate::protocol::now_ms(), Ordering::Release);
    }

    /// Whether a call failed since the last call of this; clears it.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// A fresh id for one publish, unique on this node.
    pub fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    fn envelope(&self, body: Body) -> Envelope {
        Envelope { origin: self.node.clone(), sent_us: now_us(), body }
    }

    /// Runs `task` on the actors' runtime.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// `call`'s outcome, with a failure counted and logged.
    pub fn checked<T: Send + 'static>(self: &Arc<Self>, what: &'static str, call: Pending<T>) -> Pending<T> {
        let cluster = self.clone();
        Box::pin(async move {
            let result = call.await;
            if let Err(error) = &result {
                cluster.metrics.relay_errors.inc();
                cluster.dirty.store(true, Ordering::Release);
                tracing::debug!(%error, "cluster: {what} failed");
            }
            result
        })
    }

    /// Runs `call` in the background; a failure is counted.
    pub fn background<T: Send + 'static>(self: &Arc<Self>, what: &'static str, call: Pending<T>) {
        let call = self.checked(what, call);
        self.spawn(async move {
            let _ = call.await;
        });
    }

    /// Publishes `body` to `channel` in the background.
    pub fn publish(self: &Arc<Self>, channel: &Channel, body: Body) {
        let call = self.relay.publish(channel, &self.envelope(body));
        let metrics = self.metrics.clone();
        self.background(
            "publish",
            Box::pin(async move {
                call.await?;
                metrics.relayed_out.inc();
                Ok::<_, RelayError>(())
            }),
        );
    }

    /// Numbers `body` with `room`'s next `seq` (above `floor`), keeps it in
    /// the room's history as `keep` says, and publishes it.
    pub fn publish_sequenced(self: &Arc<Self>, room: &RoomName, body: Body, floor: u64, keep: Keep) -> Pending<u64> {
        let call = self.relay.publish_sequenced(&Channel::Room(room.clone()), &self.envelope(body), floor, keep);
        let metrics = self.metrics.clone();
        self.checked(
            "numbered publish",
            Box::pin(async move {
                let seq = call.await?;
                metrics.relayed_out.inc();
                Ok(seq)
            }),
        )
    }

    /// `user` now has a connection in `room` on this node (its first).
    /// Resolves once the directory has the entry (or could not be told),
    /// so a `joined` answered after it is visible on every node.
    pub fn room_joined(self: &Arc<Self>, room: &RoomName, user: &UserId) -> Pending<()> {
        let written = self.checked("room join", self.directory.room_joined(&self.node, room, user));
        self.publish(
            &Channel::Room(room.clone()),
            Body::Presence { room: room.clone(), user: user.clone(), joined: true },
        );
        written
    }

    /// `user` no longer has a connection in `room` on this node.
    pub fn room_left(self: &Arc<Self>, room: &RoomName, user: &UserId) {
        self.background("room leave", self.directory.room_left(&self.node, room, user));
        self.publish(
            &Channel::Room(room.clone()),
            Body::Presence { room: room.clone(), user: user.clone(), joined: false },
        );
    }

    /// `user` has its first connection on this node: it goes online
    /// cluster-wide, and direct messages to it from other nodes come here.
    pub fn user_online(self: &Arc<Self>, user: &UserId) {
        self.background("user online", self.directory.user_online(&self.node, user));
        self.background("subscribe", self.relay.subscribe(&Channel::User(user.clone())));
    }

    /// `user` has no connection left on this node.
    pub fn user_offline(self: &Arc<Self>, user: &UserId) {
        self.background("user offline", self.directory.user_offline(&self.node, user));
        self.background("unsubscribe", self.relay.unsubscribe(&Channel::User(user.clone())));
    }

    /// Stops receiving `room`'s channel (its last local member left).
    pub fn room_retired(self: &Arc<Self>, room: &RoomName) {
        self.background("unsubscribe", self.relay.unsubscribe(&Channel::Room(room.clone())));
    }

    /// The users in `room` on every live node, each once, sorted.
    pub fn room_users(self: &Arc<Self>, room: &RoomName) -> impl Future<Output = Result<Vec<UserId>, RelayError>> + Send + 'static {
        let call = self.checked("presence query", self.directory.room_members(room));
        async move { Ok(directory::users_of(&call.await?)) }
    }

    /// Whether each of `users` is online on a live node.
    pub fn online(self: &Arc<Self>, users: Vec<UserId>) -> Pending<Vec<bool>> {
        self.checked("status query", self.directory.online(users))
    }

    /// Sends a `direct` frame to `user`'s connections on the other nodes.
    pub fn direct(self: &Arc<Self>, user: &UserId, frame: &str) {
        self.publish(&Channel::User(user.clone()), Body::Direct { user: user.clone(), frame: frame.to_owned() });
    }

    /// Sends a `broadcast` frame to every connection on the other nodes.
    pub fn broadcast(self: &Arc<Self>, frame: &str) {
        self.publish(&Channel::Broadcast, Body::Broadcast { frame: frame.to_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_node_is_ready_tells_nobody_and_answers_its_queries_itself() {
        let alone = Cluster::single();
        assert!(!alone.is_clustered() && alone.membership().is_none());
        assert!(alone.is_ready(), "readiness does not wait for a cluster there is none of");
        assert_eq!(alone.redis_connected(), None, "no Redis gauge to set");
        assert!(alone.room_users(&"lobby".into()).is_none() && alone.online(vec!["alice".into()]).is_none());
        assert!(alone.publish_elsewhere(&"lobby".into(), &"server".into(), "1", 0, Keep { size: 1, ttl_ms: 1 }).is_none());
        alone.user_online(&"alice".into());
        alone.direct(&"alice".into(), "{}");
        alone.broadcast("{}");
        alone.room_retired(&"lobby".into());
    }
}
