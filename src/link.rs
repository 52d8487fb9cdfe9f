//! The cluster link: the actor between this node's rooms, presence and
//! connections and the other nodes (see [`crate::cluster`]). One per
//! clustered node, a child of the root supervisor.
//!
//! It hands what arrives from the other nodes to the local actors (room
//! envelopes to their room, direct messages to presence, broadcasts to
//! every connection), and on every tick it keeps the node's membership of
//! the cluster:
//!
//! - it watches the backplane: `herald_cluster_redis_connected`, and when
//!   the backplane comes (back) up, a re-sync (below);
//! - it heartbeats the directory every third of `cluster.node_ttl_ms`; a
//!   heartbeat that finds the node unregistered (swept as dead during a
//!   long outage) also re-syncs;
//! - it lists the nodes: those that were alive and no longer are (or whose
//!   heartbeat lapsed) are dropped from every local room, which sends
//!   `user_left` for their users, and swept from the directory.
//!
//! A re-sync drops this node's directory entries for rooms it no longer
//! has, re-subscribes the broadcast channel, and has the presence registry
//! and every room rewrite their own entries and re-subscribe; each room
//! also re-reads who the other nodes have in it.
//!
//! [`LinkCell`] is the actor (see [`crate::supervisor`]), [`LinkHandle`]
//! its handle; a pump task moves envelopes from the relay into its queue
//! and a ticker queues the ticks, so a restarted run carries on where the
//! failed one stopped. A tick's work, which waits on
//! Redis, runs beside the actor, so deliveries never wait for it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;

use crate::cluster::codec::Body;
use crate::cluster::relay::{Channel, Incoming};
use crate::cluster::{now_us, Membership};
use crate::delivery::Registry;
use crate::ids::NodeId;
use crate::metrics::ActorKind;
use crate::presence::Presence;
use crate::protocol::{Encoded, ServerKind};
use crate::rooms::RoomRegistry;
use crate::supervisor::{Actor, Supervised, Failure, Mailbox};

/// Messages of the link.
pub(crate) enum LinkMsg {
    /// An envelope from the relay.
    Incoming(Incoming),
    /// Time to check the backplane, heartbeat and the other nodes.
    Tick,
    /// Panics the actor (fault injection).
    Crash,
}

/// What the link delivers to.
pub struct Targets {
    pub rooms: RoomRegistry,
    pub presence: Presence,
    pub connections: Arc<Registry>,
}

/// The link actor: its queue and state, which outlive any one run.
pub struct LinkCell {
    mailbox: Mailbox<LinkMsg>,
    cluster: Arc<Membership>,
    targets: Targets,
    state: Mutex<LinkState>,
    /// A tick is queued and not yet handled.
    tick_queued: AtomicBool,
    /// A tick's work is running.
    ticking: AtomicBool,
}

#[derive(Default)]
struct LinkState {
    /// Whether the backplane was up at the last tick.
    up: bool,
    /// The relay's epoch at the last re-sync.
    epoch: u64,
    next_heartbeat: Option<Instant>,
    /// The nodes alive at the last look.
    alive: BTreeSet<NodeId>,
    /// Nodes this node dropped as dead: if one shows up alive, the rooms
    /// read their members again.
    dropped: BTreeSet<NodeId>,
}

/// How often the link ticks: often enough that a dead node is noticed well
/// within 2 s of its heartbeat lapsing.
fn tick_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

impl LinkCell {
    /// Creates the cell and starts the tasks that feed its queue; must run
    /// on the actors' runtime.
    pub fn start(cluster: Arc<Membership>, targets: Targets) -> Arc<Self> {
        let cell = Arc::new(Self {
            mailbox: Mailbox::counted(cluster.metrics.mailbox_backlog(ActorKind::Cluster).clone()),
            cluster,
            targets,
            state: Mutex::default(),
            tick_queued: AtomicBool::new(false),
            ticking: AtomicBool::new(false),
        });
        let mut incoming = cell.cluster.relay.incoming();
        let pump = Arc::downgrade(&cell);
        tokio::spawn(async move {
            loop {
                let message = match incoming.recv().await {
                    Ok(incoming) => LinkMsg::Incoming(incoming),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "cluster: fell behind the relay; envelopes lost");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let Some(cell) = pump.upgrade() else { return };
                cell.mailbox.send(message);
            }
        });
        let ticker = Arc::downgrade(&cell);
        let every = tick_interval(cell.cluster.ttl);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(cell) = ticker.upgrade() else { return };
                // One tick waiting is enough.
                if !cell.tick_queued.swap(true, Ordering::AcqRel) {
                    cell.mailbox.send(LinkMsg::Tick);
                }
            }
        });
        cell
    }


    /// Hands an envelope from another node to whoever it is for.
    fn deliver(&self, incoming: Incoming) {
        let cluster = &self.cluster;
        let envelope = incoming.envelope;
        let own = envelope.origin == cluster.node;
        if !own {
            cluster.metrics.relayed_in.inc();
            let latency = now_us().saturating_sub(envelope.sent_us);
            cluster.metrics.relay_latency.observe(latency as f64 / 1e6);
        }
        match envelope.body {
            Body::Message { .. } | Body::Presence { .. } | Body::Typing { .. } => {
                self.targets.rooms.relayed(incoming.seq, envelope.origin, envelope.body);
            }
            // Delivered at the origin already.
            Body::Direct { .. } | Body::Broadcast { .. } if own => {}
            Body::Direct { user, frame } => {
                self.targets.presence.direct(user, Encoded::new(ServerKind::Direct, &frame));
            }
            Body::Broadcast { frame } => {
                let frame = Encoded::new(ServerKind::Broadcast, &frame);
                self.targets.connections.for_each(|outbox| {
                    outbox.deliver(&frame, &cluster.metrics);
                });
            }
        }
    }

    /// Starts a tick's work beside the actor, which keeps delivering
    /// meanwhile (the work waits on Redis); one at a time.
    fn start_tick(self: &Arc<Self>) {
        if self.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        let cell = self.clone();
        self.cluster.spawn(async move {
            cell.tick().await;
            cell.ticking.store(false, Ordering::Release);
        });
    }

    async fn tick(&self) {
        let cluster = &self.cluster;
        let connected = cluster.is_connected();
        cluster.metrics.redis_connected.set(connected as i64);
        let epoch = cluster.relay.epoch();
        let came_up = {
            let mut state = self.state.lock();
            // Up again since the last look, however briefly it was away.
            let came_up = connected && (!state.up || state.epoch != epoch);
            state.up = connected;
            if came_up {
                state.next_heartbeat = None;
                state.epoch = epoch;
            }
            came_up
        };
        if !connected {
            return;
        }
        let now = Instant::now();
        // A failed call may have left an entry or a subscription missing.
        let mut resync = came_up | cluster.take_dirty();
        if self.state.lock().next_heartbeat.is_none_or(|at| now >= at) {
            match cluster.checked("heartbeat", cluster.directory.heartbeat(&cluster.node, cluster.ttl)).await {
                Ok(unregistered) => {
                    cluster.heartbeat_done();
                    if unregistered && !came_up {
                        tracing::warn!("cluster: this node was taken for dead; restoring its presence");
                    }
                    resync |= unregistered;
                    self.state.lock().next_heartbeat = Some(now + cluster.ttl / 3);
                }
                Err(_) => {
                    // Try again, re-sync included, at the next tick.
                    self.state.lock().up = false;
                    return;
                }
            }
        }
        if resync {
            self.resync().await;
        }
        self.watch_nodes().await;
    }

    /// Restores this node's subscriptions and directory entries after the
    /// backplane was away (or the node was swept).
    async fn resync(&self) {
        let cluster = &self.cluster;
        tracing::info!("cluster: backplane up; re-syncing subscriptions and presence");
        let rooms = self.targets.rooms.live_rooms().await;
        let retain = cluster.directory.retain_rooms(&cluster.node, rooms.clone());
        // Subscriptions dropped while Redis was away are still held by the
        // client, which takes them again on reconnect: let them go. Not a
        // room's, though: a room created since the list above is subscribed
        // already, and dropping it would lose what is published to it until
        // its re-sync; a room's channel with no room here costs only the
        // envelopes the shard then drops, until a room of that name retires.
        let mut keep: BTreeSet<String> = BTreeSet::new();
        // Without an answer the user channels all go; the presence re-sync
        // below subscribes them again.
        let users = self.targets.presence.local_users().await.unwrap_or_default();
        keep.extend(users.into_iter().map(|u| Channel::User(u).name()));
        keep.insert(Channel::Broadcast.name());
        let room_prefix = Channel::Room("".into()).name();
        let keep = move |name: &str| name.starts_with(&room_prefix) || keep.contains(name);
        cluster.background("unsubscribe", cluster.relay.retain_subscriptions(&keep));
        cluster.background("subscribe", cluster.relay.subscribe(&Channel::Broadcast));
        self.targets.presence.resync();
        // Rooms created since the list above re-sync too: the retain is
        // queued before any of their rewrites.
        self.targets.rooms.resync_all();
        if let Ok(dropped) = cluster.checked("re-sync", retain).await {
            for (room, user) in dropped {
                cluster.publish(&Channel::Room(room.clone()), Body::Presence { room, user, joined: false });
            }
        }
    }

    /// Drops the nodes that died since the last look.
    async fn watch_nodes(&self) {
        let cluster = &self.cluster;
        let Ok(nodes) = cluster.checked("node list", cluster.directory.nodes()).await else {
            return;
        };
        let mut alive = nodes.alive;
        alive.insert(cluster.node.clone());
        cluster.metrics.nodes_alive.set(alive.len() as i64);
        let (gone, back) = {
            let mut state = self.state.lock();
            let gone: BTreeSet<NodeId> =
                state.alive.difference(&alive).chain(&nodes.dead).filter(|n| **n != cluster.node).cloned().collect();
            // Dropped, but alive after all (its heartbeat was only late):
            // its users are still in the directory.
            let back: Vec<NodeId> = state.dropped.intersection(&alive).cloned().collect();
            for node in &back {
                state.dropped.remove(node);
            }
            state.dropped.extend(gone.iter().cloned());
            // A swept node that comes back re-registers and announces its
            // users itself; only unswept ones need remembering.
            state.dropped.retain(|node| nodes.dead.contains(node));
            state.alive = alive;
            (gone, back)
        };
        if !back.is_empty() {
            tracing::info!(?back, "cluster: nodes taken for dead are alive; reading room members again");
            self.targets.rooms.resync_all();
        }
        if gone.is_empty() {
            return;
        }
        tracing::info!(?gone, "cluster: nodes gone; dropping their users");
        self.targets.rooms.nodes_gone(Arc::new(gone));
        for node in nodes.dead {
            if node != cluster.node {
                cluster.background("sweep", cluster.directory.sweep(&node));
            }
        }
    }
}

impl Actor for Arc<LinkCell> {
    type Msg = LinkMsg;
    const KIND: ActorKind = ActorKind::Cluster;

    fn handle(&mut self, msg: LinkMsg) -> Result<(), Failure> {
        match msg {
            LinkMsg::Incoming(incoming) => self.deliver(incoming),
            LinkMsg::Tick => {
                self.tick_queued.store(false, Ordering::Release);
                self.start_tick();
            }
            LinkMsg::Crash => panic!("fault injection: cluster link"),
        }
        Ok(())
    }
}

impl Supervised for Arc<LinkCell> {
    fn mailbox(&self) -> &Mailbox<LinkMsg> {
        &self.mailbox
    }
}

/// Typed handle to the link.
#[derive(Clone)]
pub struct LinkHandle {
    cell: Arc<LinkCell>,
}

impl LinkHandle {
    pub fn new(cell: Arc<LinkCell>) -> Self {
        Self { cell }
    }

    /// The link's run now.
    pub fn actor(&self) -> Option<ractor::ActorId> {
        self.cell.mailbox.actor()
    }

    /// Makes the link panic when it reaches this message (fault injection);
    /// returns the run now going.
    pub fn crash(&self) -> Option<ractor::ActorId> {
        let actor = self.actor()?;
        self.cell.mailbox.send(LinkMsg::Crash);
        Some(actor)
    }
}
