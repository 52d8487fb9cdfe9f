//! A room registry shard: owns the rooms whose names hash to it, runs them,
//! and restarts them when they fail.
//!
//! Joins, leaves and server-side publishes pass through the shard, which
//! forwards them to the room in the order it received them. That order is
//! what makes retiring a room safe: an empty room reports how many joins and
//! server publishes it has seen, and the shard stops it only if that equals
//! what it forwarded, so nothing already on its way is dropped with the room.
//!
//! The shard also keeps each room's `seq` counter, which outlives the room
//! actor: `seq` is per room for the server's lifetime. A server publish to a
//! room with no actor (no members here) takes the next `seq` in the shard
//! itself, so numbering advances with nobody listening. Rooms that never
//! carried a message keep nothing once empty.
//!
//! Rooms are actors without a task of their own: a room with messages
//! waiting puts one [`ShardMsg::Run`] in its shard's mailbox, and the shard
//! gives it a turn (see `room`). So an idle room costs its state and nothing
//! else, and a message reaches its room with one wake-up, the shard's.
//!
//! [`ShardCell`] is the actor (see [`crate::supervisor`]): everything above
//! outlives any one run of it. A room that panics starts its next life over its
//! [`RoomCell`] (within `supervision.max_restarts` per window for the
//! shard's rooms; past that the shard fails, and the root restarts it). A
//! restarted shard gives every room that still has members a new life, and
//! a turn if messages wait.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use ractor::RpcReplyPort;
use serde_json::value::RawValue;

use super::history::{Archive, Page, Stream};
use super::namespace::{Namespace, Namespaces};
use super::room::{JoinReply, RoomCell, RoomMsg};
use super::Since;
use super::RoomsFull;
use crate::cluster::Cluster;
use crate::config::SupervisionConfig;
use crate::delivery::{ConnId, Member};
use crate::ids::{NodeId, RoomName, UserId};
use crate::metrics::{ActorKind, JoinRefusal, Metrics};
use crate::protocol::{now_ms, ServerFrame, UserList};
use crate::presence::Presence;
use crate::supervisor::{Actor, Supervised, Failure, Mailbox, RestartBudget};
use crate::cluster::codec::Body;

/// Messages of a registry shard. Use [`super::RoomRegistry`] to send them.
pub(crate) enum ShardMsg {
    Join {
        room: RoomName,
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Since>,
        reply: RpcReplyPort<Result<JoinReply, RoomsFull>>,
    },
    Leave { room: RoomName, conn: ConnId },
    /// Sent by a room after any message that leaves it without members.
    Empty { room: Arc<RoomCell>, seen: u32 },
    /// A room has messages waiting: give it a turn.
    Run(Arc<RoomCell>),
    /// A publish from the server API; the reply is its `seq`.
    Publish { room: RoomName, from: UserId, data: Box<RawValue>, reply: RpcReplyPort<u64>, at: Instant },
    /// The users of a room alive here (`None`: not alive here).
    Presence { room: RoomName, reply: RpcReplyPort<Option<UserList>> },
    /// The last `seq` given out in a room (0 when none).
    LastSeq { room: RoomName, reply: RpcReplyPort<u64> },
    /// Up to `limit` messages of a room's history after `since` (single node).
    History { room: RoomName, since: u64, limit: usize, reply: RpcReplyPort<Page> },
    /// An envelope from the cluster, for the room if it is alive here.
    Relayed { room: RoomName, seq: Option<u64>, origin: NodeId, body: Body },
    /// Every live room re-subscribes and rewrites its cluster entries.
    Resync,
    /// Every live room drops the users of nodes that died.
    NodesGone(Arc<BTreeSet<NodeId>>),
    /// The names of the live rooms.
    LiveRooms { reply: RpcReplyPort<Vec<RoomName>> },
    /// The life a room is in, if it is alive here.
    RoomLife { room: RoomName, reply: RpcReplyPort<Option<u32>> },
    /// Makes a room panic (fault injection); the reply is the life it was
    /// in, or `None` when the room is not alive here.
    CrashRoom { room: RoomName, reply: RpcReplyPort<Option<u32>> },
    /// Stalls a room (fault injection); the reply says whether it is alive here.
    StallRoom { room: RoomName, time: std::time::Duration, reply: RpcReplyPort<bool> },
    /// Panics the shard (fault injection).
    Crash,
}

struct Slot {
    /// The room's numbering and history, which outlive its actor.
    stream: Arc<Stream>,
    room: Option<Arc<RoomCell>>,
    /// Joins and server publishes forwarded to the room (wrapping, as the
    /// room's count of them does).
    forwarded: u32,
}

impl Slot {
    /// A slot for a room first numbered or created here, in `namespace`.
    fn new(namespace: &Arc<Namespace>) -> Self {
        Self { stream: Arc::new(Stream::new(namespace.clone())), room: None, forwarded: 0 }
    }
}

/// The rooms a node holds, against `limits.max_rooms`: one count shared by
/// every shard.
pub struct RoomCap {
    live: AtomicUsize,
    max: usize,
}

impl RoomCap {
    pub fn new(max: usize) -> Self {
        Self { live: AtomicUsize::new(0), max }
    }

    /// Counts one more room, unless the node holds `max` already.
    fn take(&self) -> bool {
        self.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    fn give_back(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A registry shard actor: its queue and rooms, which outlive any one run.
pub struct ShardCell {
    mailbox: Arc<Mailbox<ShardMsg>>,
    slots: Mutex<HashMap<RoomName, Slot>>,
    presence: Presence,
    metrics: Arc<Metrics>,
    supervision: SupervisionConfig,
    cluster: Cluster,
    cap: Arc<RoomCap>,
    archive: Arc<Archive>,
    namespaces: Arc<Namespaces>,
    /// Room restarts within the current run.
    budget: Mutex<RestartBudget>,
}

impl ShardCell {
    pub fn new(
        presence: Presence,
        metrics: Arc<Metrics>,
        supervision: SupervisionConfig,
        cluster: Cluster,
        cap: Arc<RoomCap>,
        archive: Arc<Archive>,
        namespaces: Arc<Namespaces>,
    ) -> Self {
        let mailbox = Arc::new(Mailbox::counted(metrics.mailbox_backlog(ActorKind::Registry).clone()));
        let budget = Mutex::new(RestartBudget::new(&supervision));
        Self { mailbox, slots: Mutex::default(), presence, metrics, supervision, cluster, cap, archive, namespaces, budget }
    }

    /// The live room named `name`, if it has one.
    fn room(&self, name: &str) -> Option<Arc<RoomCell>> {
        self.slots.lock().get(name).and_then(|s| s.room.clone())
    }

    /// Every live room of this shard.
    fn live_rooms(&self) -> Vec<Arc<RoomCell>> {
        self.slots.lock().values().filter_map(|s| s.room.clone()).collect()
    }

    /// Forwards a join to its room, creating the room unless the node holds
    /// `limits.max_rooms` already (then the join is refused).
    fn join(
        &self,
        name: RoomName,
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Since>,
        reply: RpcReplyPort<Result<JoinReply, RoomsFull>>,
    ) {
        let (room, new) = {
            let mut slots = self.slots.lock();
            match slots.get(&name).and_then(|slot| slot.room.clone()) {
                Some(room) => (room, false),
                None if !self.cap.take() => {
                    drop(slots);
                    self.metrics.join_refused(JoinRefusal::MaxRooms);
                    let _ = reply.send(Err(RoomsFull));
                    return;
                }
                None => {
                    let slot = slots.entry(name.clone()).or_insert_with(|| Slot::new(self.namespaces.resolve(&name)));
                    let room = Arc::new(RoomCell::new(
                        name.clone(),
                        slot.stream.clone(),
                        self.archive.clone(),
                        self.mailbox.clone(),
                        self.presence.clone(),
                        self.metrics.clone(),
                        self.cluster.membership().cloned(),
                    ));
                    slot.room = Some(room.clone());
                    slot.forwarded = 0;
                    self.metrics.rooms.inc();
                    (room, true)
                }
            }
        };
        if new && self.cluster.is_clustered() {
            // Before the join: it waits until the room knows the other nodes' members.
            room.send(RoomMsg::Sync { initial: true });
        }
        if let Some(slot) = self.slots.lock().get_mut(&name) {
            slot.forwarded = slot.forwarded.wrapping_add(1);
        }
        room.send(RoomMsg::Join { member, id, since: since.map(Box::new), reply });
    }

    /// Gives a server publish its `seq`: through the room when there is one,
    /// so it is ordered with the members' own publishes; here otherwise.
    fn publish(&self, name: RoomName, from: UserId, data: Box<RawValue>, reply: RpcReplyPort<u64>, at: Instant) {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get_mut(&name) {
            if let Some(room) = slot.room.clone() {
                slot.forwarded = slot.forwarded.wrapping_add(1);
                drop(slots);
                room.send(RoomMsg::ServerPublish { from, data, reply, at });
                return;
            }
        }
        let (floor, keep) = match slots.get(&name) {
            Some(slot) => (slot.stream.latest(), slot.stream.namespace.history),
            // A room this node never had: its name is looked up for this
            // one publish, as nothing here keeps it.
            None => (0, self.namespaces.resolve(&name).history),
        };
        match self.cluster.publish_elsewhere(&name, &from, data.get(), floor, keep) {
            // Nobody here to deliver to: Redis numbers it for the other
            // nodes. Nothing is kept here for the room.
            Some(call) => {
                drop(slots);
                self.cluster.spawn(async move {
                    // Without a number the reply port is dropped: the caller gets 503.
                    if let Ok(seq) = call.await {
                        let _ = reply.send(seq);
                    }
                });
            }
            None => {
                let slot = slots.entry(name.clone()).or_insert_with(|| Slot::new(self.namespaces.resolve(&name)));
                let stream = slot.stream.clone();
                drop(slots);
                let (seq, _) = self.archive.publish(&stream, |seq| {
                    ServerFrame::Message { room: &name, from: &from, data: &data, seq, ts: now_ms() }.encode()
                });
                let _ = reply.send(seq);
            }
        }
    }

    fn last_seq(&self, name: &str) -> u64 {
        self.slots.lock().get(name).map_or(0, |s| s.stream.latest())
    }

    fn history(&self, name: &str, since: u64, limit: usize) -> Page {
        let stream = self.slots.lock().get(name).map(|slot| slot.stream.clone());
        match stream {
            Some(stream) => self.archive.page(&stream, since, limit),
            None => Page { latest: 0, frames: Vec::new() },
        }
    }

    fn empty(&self, room: &Arc<RoomCell>, seen: u32) {
        let current = self
            .slots
            .lock()
            .get(&room.name)
            .is_some_and(|slot| slot.room.as_ref().is_some_and(|r| Arc::ptr_eq(r, room)) && slot.forwarded == seen);
        // Equal counts mean every join forwarded was handled before the room
        // found itself empty: it still is.
        if current {
            self.retire(&room.name);
        }
    }

    /// Drops a room, keeping its `seq` if it has one.
    fn retire(&self, name: &str) {
        let mut slots = self.slots.lock();
        let Some(slot) = slots.get_mut(name) else { return };
        if let Some(room) = slot.room.take() {
            self.metrics.rooms.dec();
            self.cap.give_back();
            room.retire();
            self.cluster.room_retired(&room.name);
        }
        if slot.stream.latest() == 0 {
            slots.remove(name);
            crate::memory::shrink_sparse(&mut slots);
        }
    }
}

impl Actor for Arc<ShardCell> {
    type Msg = ShardMsg;
    const KIND: ActorKind = ActorKind::Registry;

    fn handle(&mut self, msg: ShardMsg) -> Result<(), Failure> {
        match msg {
            ShardMsg::Join { room, member, id, since, reply } => self.join(room, member, id, since, reply),
            ShardMsg::Leave { room, conn } => {
                if let Some(room) = self.room(&room) {
                    room.send(RoomMsg::Leave { conn });
                }
            }
            ShardMsg::Empty { room, seen } => self.empty(&room, seen),
            ShardMsg::Run(room) => return room.run(|room, error| self.room_failed(room, error)),
            ShardMsg::Publish { room, from, data, reply, at } => self.publish(room, from, data, reply, at),
            ShardMsg::Presence { room, reply } => match self.room(&room) {
                Some(room) => room.send(RoomMsg::Presence { reply }),
                None => {
                    let _ = reply.send(None);
                }
            },
            ShardMsg::LastSeq { room, reply } => {
                let _ = reply.send(self.last_seq(&room));
            }
            ShardMsg::History { room, since, limit, reply } => {
                let _ = reply.send(self.history(&room, since, limit));
            }
            ShardMsg::Relayed { room, seq, origin, body } => {
                if let Some(cell) = self.room(&room) {
                    cell.send(RoomMsg::Relayed { seq, origin, body });
                }
            }
            ShardMsg::Resync => {
                for room in self.live_rooms() {
                    room.send(RoomMsg::Sync { initial: false });
                }
            }
            ShardMsg::NodesGone(nodes) => {
                for room in self.live_rooms() {
                    room.send(RoomMsg::NodesGone(nodes.clone()));
                }
            }
            ShardMsg::LiveRooms { reply } => {
                let _ = reply.send(self.live_rooms().iter().map(|room| room.name.clone()).collect());
            }
            ShardMsg::RoomLife { room, reply } => {
                let _ = reply.send(self.room(&room).map(|room| room.life()));
            }
            ShardMsg::CrashRoom { room, reply } => {
                let life = self.room(&room).map(|room| {
                    let life = room.life();
                    room.send(RoomMsg::Crash);
                    life
                });
                let _ = reply.send(life);
            }
            ShardMsg::StallRoom { room, time, reply } => {
                let room = self.room(&room);
                if let Some(room) = &room {
                    room.send(RoomMsg::Stall(time));
                }
                let _ = reply.send(room.is_some());
            }
            ShardMsg::Crash => panic!("fault injection: room registry shard"),
        }
        Ok(())
    }
}

impl Supervised for Arc<ShardCell> {
    fn mailbox(&self) -> &Mailbox<ShardMsg> {
        &self.mailbox
    }

    /// A fresh shard has no rooms; a restarted one gives every room that
    /// still has members a new life (and a turn, if messages wait) and
    /// retires the others.
    fn started(&mut self) {
        *self.budget.lock() = RestartBudget::new(&self.supervision);
        for room in self.live_rooms() {
            if !room.revive() {
                self.retire(&room.name);
            }
        }
    }
}

impl ShardCell {
    /// A room panicked: it goes on in its next life within the restart
    /// budget; past it, the shard fails so the root decides.
    fn room_failed(&self, room: &RoomCell, error: String) -> Result<(), Failure> {
        let metrics = &self.metrics;
        metrics.actor_failed(ActorKind::Room);
        tracing::error!(room = %room.name, %error, "room failed");
        if !self.budget.lock().allow(Instant::now()) {
            let limit = &self.supervision;
            return Err(format!(
                "room {} failed past the limit of {} restarts within {} ms",
                room.name, limit.max_restarts, limit.window_ms
            )
            .into());
        }
        metrics.actor_restarted(ActorKind::Room);
        tracing::warn!(room = %room.name, "room restarted");
        Ok(())
    }
}
