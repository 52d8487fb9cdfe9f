//! A room: one per room with members on this node, an actor run by the
//! registry shard that owns it.
//!
//! A room owns the connections in it and fans out to them. Each publish gets
//! the next `seq` from a counter the registry shard owns (so numbering
//! outlives the actor), is serialised once, and the same bytes are queued for
//! every member with a non-blocking `try_send`. A member whose connection is
//! gone is removed on the spot, as if it had left.
//!
//! The room counts connections per user, so `user_joined` goes out on a
//! user's first connection and `user_left` on the last, and tells presence
//! about exactly those two moments.
//!
//! A room's members and its queue of messages live in its [`RoomCell`],
//! which its shard keeps. A room costs no task of its own: a message for it
//! schedules the room on its shard (one `ShardMsg::Run` in flight at most),
//! and the shard's actor takes the room's messages one at a time and applies
//! them in order, so the room has one writer and a bounded turn like any
//! actor. A panic while applying one loses that message only: the room
//! starts its next life over the same cell (members, per-user counts and
//! `seq` untouched) and carries on with the messages that waited.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use ractor::RpcReplyPort;
use serde_json::value::RawValue;

use super::shard::ShardMsg;
use super::users::Users;
use crate::cluster::codec::Body;
use crate::cluster::directory::Changes;
use crate::cluster::relay::{Channel, Pending, RelayError};
use crate::cluster::Cluster;
use crate::connection::{ConnId, Delivery, Member, Outbox};
use crate::metrics::{ActorKind, Metrics};
use crate::presence::Presence;
use crate::protocol::{now_ms, Encoded, ErrorCode, ServerFrame, ServerKind};
use crate::transport::TransportKind;
use crate::supervisor::Mailbox;

/// A publish on its way to a room.
pub struct Publication {
    pub conn: ConnId,
    pub user: Arc<str>,
    pub data: Box<RawValue>,
    /// Whether the publishing connection receives its own message.
    pub echo: bool,
    /// The client frame's `id`; with one, the publisher gets an `ack` with the `seq`.
    pub id: Option<Box<RawValue>>,
    /// When the frame reached the server.
    pub at: Instant,
}

/// What a join answers: the room to publish to, and the users now in it.
pub struct JoinReply {
    pub room: Arc<RoomCell>,
    pub users: Vec<Arc<str>>,
}

/// Messages of a room. Joins, leaves and server publishes arrive through the
/// registry shard.
pub enum RoomMsg {
    Join { member: Member, reply: RpcReplyPort<JoinReply> },
    Leave { conn: ConnId },
    Publish(Publication),
    /// A publish from the server API, sent to every member; the reply is its `seq`.
    ServerPublish {
        from: Arc<str>,
        data: Box<RawValue>,
        reply: RpcReplyPort<u64>,
        /// When the request reached the server.
        at: Instant,
    },
    Typing {
        conn: ConnId,
        user: Arc<str>,
        typing: bool,
    },
    /// Cluster: an envelope on the room's channel, from another node or
    /// this one's own (a numbered message comes back to its origin too).
    Relayed {
        seq: Option<u64>,
        origin: Arc<str>,
        body: Body,
    },
    /// Cluster: subscribe to the room's channel and read who the other
    /// nodes have in it; not `initial`, also rewrite this node's entries
    /// (after an outage).
    Sync {
        initial: bool,
    },
    /// Cluster: how sync number `generation` went (`None`: it failed).
    Synced { generation: u64, outcome: Option<SyncOutcome> },
    /// Cluster: the number a publish of this room was given, or why none.
    Numbered {
        token: u64,
        result: Result<u64, RelayError>,
    },
    /// Cluster: these nodes died; their users are no longer in the room.
    NodesGone(Arc<BTreeSet<Arc<str>>>),
    /// Panics the actor (fault injection).
    Crash,
}

/// What a sync learnt.
pub struct SyncOutcome {
    /// How this node's own entries changed (a rewrite after an outage).
    changes: Changes,
    /// `(node, user)` for every user in the room on a live node.
    members: Vec<(String, String)>,
}

/// Who is waiting for the number of a publish sent to the backplane.
enum Publisher {
    Member { conn: ConnId, id: Option<Box<RawValue>>, echo: bool },
    Server { reply: RpcReplyPort<u64> },
}

/// A publish on its way through the backplane.
struct Waiting {
    publisher: Publisher,
    from: Arc<str>,
    data: Box<RawValue>,
    /// The member's `ack` went out already (its message came back first).
    acked: bool,
    /// When the publish reached the server.
    at: Instant,
}

/// A room's part in a cluster.
struct Clustered {
    cluster: Arc<Cluster>,
    /// Users other nodes have in the room, with those nodes.
    remote: BTreeMap<Arc<str>, Vec<Arc<str>>>,
    /// Between asking for the other nodes' members and having them:
    /// membership changes wait in `deferred`, so they apply on top.
    syncing: bool,
    /// The latest sync; answers to older ones are ignored.
    generation: u64,
    /// Subscribed to the room's channel (the last sync went through): only
    /// then do publishes go through the backplane.
    subscribed: bool,
    deferred: VecDeque<RoomMsg>,
    /// Publishes waiting for their number, by token.
    waiting: HashMap<u64, Waiting>,
    /// Publishes numbered before their message came back: `(seq, when it
    /// reached the server)`, for the latency of their delivery here.
    unechoed: VecDeque<(u64, Instant)>,
}

/// A room: its queue and its state, which outlive any one life of it.
pub struct RoomCell {
    pub name: Arc<str>,
    pub mailbox: Mailbox<RoomMsg>,
    /// The shard that runs the room, and is told when it is left empty.
    shard: Arc<Mailbox<ShardMsg>>,
    /// Lives so far: one more after every panic, and after its shard restarts.
    lives: AtomicU32,
    /// Dropped by its shard: what still arrives is not handled.
    retired: AtomicBool,
    state: Mutex<RoomState>,
}

/// A room's members and bookkeeping.
pub struct RoomState {
    name: Arc<str>,
    seq: Arc<AtomicU64>,
    presence: Presence,
    metrics: Arc<Metrics>,
    members: HashMap<ConnId, (Arc<str>, Outbox)>,
    /// Connections per user in this room, kept sorted: a join in a big room
    /// lists them without sorting.
    users: Users,
    /// Joins and server publishes handled so far; the shard compares it with
    /// what it forwarded before it lets an empty room stop, so nothing the
    /// shard sent is ever lost to a stop.
    seen: u64,
    /// With clustering; `None` on a single node.
    cluster: Option<Box<Clustered>>,
}

impl RoomCell {
    pub fn new(
        name: Arc<str>,
        seq: Arc<AtomicU64>,
        shard: Arc<Mailbox<ShardMsg>>,
        presence: Presence,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let cluster = cluster.map(|cluster| {
            Box::new(Clustered {
                cluster,
                remote: BTreeMap::new(),
                syncing: false,
                generation: 0,
                subscribed: false,
                deferred: VecDeque::new(),
                waiting: HashMap::new(),
                unechoed: VecDeque::new(),
            })
        });
        let state = RoomState {
            name: name.clone(),
            seq,
            presence,
            metrics,
            members: HashMap::new(),
            users: Users::default(),
            seen: 0,
            cluster,
        };
        let mailbox = Mailbox::counted(state.metrics.mailbox_backlog(ActorKind::Room).clone());
        let lives = AtomicU32::new(1);
        Self { name, mailbox, shard, lives, retired: AtomicBool::new(false), state: Mutex::new(state) }
    }

    /// Queues `msg` for the room, and schedules the room on its shard
    /// unless it is already.
    pub fn send(self: &Arc<Self>, msg: RoomMsg) {
        if self.mailbox.push(msg) {
            self.schedule();
        }
    }

    fn schedule(self: &Arc<Self>) {
        self.shard.send(ShardMsg::Run(self.clone()));
    }

    /// One turn of the room, on its shard's actor: up to a batch of
    /// messages, each applied alone. A message the room panics on is lost
    /// and `failed` hears why; the room then starts its next life and goes
    /// on, unless `failed` says to stop (the shard is past its restart
    /// limit), which ends the turn with that answer.
    pub fn run<E>(self: &Arc<Self>, mut failed: impl FnMut(&Arc<Self>, String) -> Result<(), E>) -> Result<(), E> {
        let mut turn = self.mailbox.turn();
        while let Some(msg) = turn.next() {
            if self.retired.load(Ordering::Acquire) {
                continue;
            }
            let applied = catch_unwind(AssertUnwindSafe(|| {
                if let RoomMsg::Crash = msg {
                    panic!("fault injection: room {}", self.name);
                }
                self.apply(msg);
            }));
            if let Err(panic) = applied {
                failed(self, panic_message(&*panic))?;
                self.lives.fetch_add(1, Ordering::AcqRel);
            }
        }
        if turn.rescheduled() {
            self.schedule();
        } else {
            // An idle room keeps no queue: a message is 136 bytes, and a
            // queue that held one keeps room for four.
            turn.release();
        }
        Ok(())
    }

    /// A new life after its shard restarted, with a turn scheduled if
    /// messages wait (the shard may have lost the one it had in hand).
    pub fn revive(self: &Arc<Self>) {
        self.lives.fetch_add(1, Ordering::AcqRel);
        if self.mailbox.reschedule() {
            self.schedule();
        }
    }

    /// Marks the room dropped by its shard.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Which life the room is in: it changes when the room restarts.
    pub fn life(&self) -> u32 {
        self.lives.load(Ordering::Acquire)
    }

    /// Applies one message to the room's state; `Crash` is [`Self::run`]'s to act on.
    fn apply(self: &Arc<Self>, msg: RoomMsg) {
        let mut state = self.state.lock();
        // Counted before anything else, so a message the room fails on still
        // counts as seen and the shard's retire check stays in step.
        if matches!(msg, RoomMsg::Join { .. } | RoomMsg::ServerPublish { .. }) {
            state.seen += 1;
        }
        match state.cluster.as_mut() {
            Some(clustered) if clustered.syncing && defers(&msg) => clustered.deferred.push_back(msg),
            _ => self.handle(&mut state, msg),
        }
        if state.members.is_empty() && state.cluster.as_ref().is_none_or(|c| c.is_settled()) {
            let empty = ShardMsg::Empty { room: self.clone(), seen: state.seen };
            self.shard.send(empty);
        }
    }

    fn handle(self: &Arc<Self>, state: &mut RoomState, msg: RoomMsg) {
        match msg {
            RoomMsg::Join { member, reply } => {
                // Only a transport that writes `joined` needs the user list.
                let users_wanted = member.outbox.carries(ServerKind::Joined);
                let written = state.join(member);
                let users = if users_wanted { state.users() } else { Vec::new() };
                let answer = JoinReply { room: self.clone(), users };
                match (written, &state.cluster) {
                    // Answered once the other nodes can see the new user.
                    (Some(written), Some(clustered)) => clustered.cluster.spawn(async move {
                        let _ = written.await;
                        let _ = reply.send(answer);
                    }),
                    _ => {
                        let _ = reply.send(answer);
                    }
                }
            }
            RoomMsg::Leave { conn } => state.remove(conn),
            RoomMsg::Publish(publication) => match state.relaying() {
                Some(_) => {
                    let Publication { conn, user, data, echo, id, at } = publication;
                    state.relay_publish(self, user, data, Publisher::Member { conn, id, echo }, at);
                }
                None => state.publish(publication),
            },
            RoomMsg::ServerPublish { from, data, reply, at } => match state.relaying() {
                Some(_) => state.relay_publish(self, from, data, Publisher::Server { reply }, at),
                None => {
                    let _ = reply.send(state.server_publish(&from, &data, at));
                }
            },
            RoomMsg::Typing { conn, user, typing } => {
                let frame = ServerFrame::Typing { room: &state.name, user: &user, typing }.encode();
                state.fan_out(&frame, Some(conn));
                if let Some(clustered) = &state.cluster {
                    let body = Body::Typing { room: state.name.to_string(), user: user.to_string(), typing };
                    clustered.cluster.publish(&Channel::Room(state.name.clone()), body);
                }
            }
            RoomMsg::Relayed { seq, origin, body } => state.relayed(seq, origin, body),
            RoomMsg::Sync { initial } => state.sync(self, initial),
            RoomMsg::Synced { generation, outcome } => {
                if state.synced(generation, outcome) {
                    while let Some(msg) = state.cluster.as_mut().and_then(|c| c.deferred.pop_front()) {
                        self.handle(state, msg);
                    }
                }
            }
            RoomMsg::Numbered { token, result } => state.numbered(token, result),
            RoomMsg::NodesGone(nodes) => state.nodes_gone(&nodes),
            RoomMsg::Crash => {}
        }
    }

    /// The users with a connection in the room on this node.
    pub fn local_users(&self) -> Vec<Arc<str>> {
        self.state.lock().users.iter().cloned().collect()
    }

    /// Members now in the room.
    pub fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }
}

/// Whether a syncing room keeps `msg` for after the sync: everything that
/// changes or reads membership. Messages from the channel are delivered at
/// once (their order is the channel's), and so are the sync's own answers.
fn defers(msg: &RoomMsg) -> bool {
    match msg {
        RoomMsg::Relayed { body, .. } => !matches!(body, Body::Message { .. }),
        RoomMsg::Synced { .. } | RoomMsg::Numbered { .. } | RoomMsg::Sync { .. } | RoomMsg::Crash => false,
        _ => true,
    }
}

impl Clustered {
    /// Neither syncing nor waiting for anything: the room may retire.
    fn is_settled(&self) -> bool {
        !self.syncing && self.deferred.is_empty() && self.waiting.is_empty()
    }
}

impl RoomState {
    /// The users in the room (on every node, with clustering), sorted.
    fn users(&self) -> Vec<Arc<str>> {
        match &self.cluster {
            None => self.users.iter().cloned().collect(),
            Some(clustered) => {
                let all: BTreeSet<&Arc<str>> = self.users.iter().chain(clustered.remote.keys()).collect();
                all.into_iter().cloned().collect()
            }
        }
    }

    /// Whether `user` is in the room, here or on another node.
    fn present(&self, user: &str) -> bool {
        self.users.contains(user) || self.cluster.as_ref().is_some_and(|c| c.remote.contains_key(user))
    }

    /// Tells the members that `user` arrived or left, if that changed.
    fn announce(&mut self, user: &str, was: bool, now: bool) {
        let frame = match (was, now) {
            (false, true) => ServerFrame::UserJoined { room: &self.name, user }.encode(),
            (true, false) => ServerFrame::UserLeft { room: &self.name, user }.encode(),
            _ => return,
        };
        self.fan_out(&frame, None);
    }
    /// Queues `frame` for every member but `except`. Members that cannot take
    /// it (slow consumers, closed connections) leave the room.
    fn fan_out(&mut self, frame: &Encoded, except: Option<ConnId>) {
        let mut gone = Vec::new();
        // Counted once per publish rather than once per member: the fan-out
        // loop is one write per member and nothing else.
        let mut written = [0u64; TransportKind::ALL.len()];
        let mut queued = 0;
        for (conn, (_, outbox)) in &self.members {
            if Some(*conn) == except {
                continue;
            }
            match outbox.deliver_uncounted(frame, &self.metrics) {
                Delivery::Queued => {
                    queued += 1;
                    if outbox.carries(frame.kind) {
                        written[outbox.transport() as usize] += 1;
                    }
                }
                _ => gone.push(*conn),
            }
        }
        for (transport, frames) in TransportKind::ALL.into_iter().zip(written) {
            if frames > 0 {
                self.metrics.frames_out(frame.kind, frames);
                self.metrics.bytes_out(transport, frames as usize * frame.text().len());
            }
        }
        if frame.kind == ServerKind::Message {
            self.metrics.delivered.inc_by(queued);
        }
        for conn in gone {
            self.remove(conn);
        }
    }

    /// Adds a member. With clustering, returns the directory write of a
    /// user new to the room on this node.
    fn join(&mut self, member: Member) -> Option<Pending<()>> {
        if self.members.contains_key(&member.conn) {
            return None;
        }
        self.members.insert(member.conn, (member.user.clone(), member.outbox));
        self.metrics.memberships.inc();
        let elsewhere = self.present(&member.user);
        if !self.users.add(&member.user) {
            return None;
        }
        self.presence.room_joined(self.name.clone(), member.user.clone());
        let written = self.cluster.as_ref().map(|c| c.cluster.room_joined(&self.name, &member.user));
        if !elsewhere {
            let frame = ServerFrame::UserJoined { room: &self.name, user: &member.user }.encode();
            self.fan_out(&frame, Some(member.conn));
        }
        written
    }

    fn remove(&mut self, conn: ConnId) {
        let Some((user, _)) = self.members.remove(&conn) else { return };
        crate::memory::shrink_sparse(&mut self.members);
        self.metrics.memberships.dec();
        if self.users.remove(&user) {
            self.presence.room_left(self.name.clone(), user.clone());
            if let Some(clustered) = &self.cluster {
                clustered.cluster.room_left(&self.name, &user);
            }
            let now = self.present(&user);
            self.announce(&user, true, now);
        }
    }

    /// Takes the next `seq` and encodes the `message` frame that carries it.
    fn message(&self, from: &str, data: &RawValue) -> (u64, Encoded) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        (seq, ServerFrame::Message { room: &self.name, from, data, seq, ts: now_ms() }.encode())
    }

    fn publish(&mut self, publication: Publication) {
        let (seq, frame) = self.message(&publication.user, &publication.data);
        if let (Some(id), Some((_, outbox))) = (&publication.id, self.members.get(&publication.conn)) {
            outbox.deliver(&ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode(), &self.metrics);
        }
        let except = (!publication.echo).then_some(publication.conn);
        self.fan_out(&frame, except);
        self.enqueued(publication.at);
    }

    /// Records the latency of a publish that reached the server at `at` and
    /// has now been queued to every member here.
    fn enqueued(&self, at: Instant) {
        self.metrics.publish_latency.observe(at.elapsed().as_secs_f64());
    }

    fn server_publish(&mut self, from: &str, data: &RawValue, at: Instant) -> u64 {
        let (seq, frame) = self.message(from, data);
        self.fan_out(&frame, None);
        self.enqueued(at);
        seq
    }

    /// The cluster, when publishes go through it now: clustered and the
    /// backplane up. Otherwise the room numbers and delivers on its own.
    /// A publish the backplane cannot take counts as a relay error.
    fn relaying(&self) -> Option<&Arc<Cluster>> {
        let clustered = self.cluster.as_ref()?;
        if clustered.subscribed && clustered.cluster.is_connected() {
            return Some(&clustered.cluster);
        }
        self.metrics.relay_errors.inc();
        None
    }

    /// Sends a publish through the backplane, which numbers it; it is
    /// delivered here when it comes back on the room's channel.
    fn relay_publish(
        &mut self,
        cell: &Arc<RoomCell>,
        from: Arc<str>,
        data: Box<RawValue>,
        publisher: Publisher,
        at: Instant,
    ) {
        let floor = self.seq.load(Ordering::Relaxed);
        let Some(clustered) = self.cluster.as_mut() else { return };
        let cluster = clustered.cluster.clone();
        let token = cluster.token();
        let except = match &publisher {
            Publisher::Member { conn, echo: false, .. } => Some(conn.0),
            _ => None,
        };
        let body = Body::Message {
            room: self.name.to_string(),
            from: from.to_string(),
            data: data.get().to_owned(),
            ts: now_ms(),
            token,
            except,
        };
        let call = cluster.publish_sequenced(&self.name, body, floor);
        clustered.waiting.insert(token, Waiting { publisher, from, data, acked: false, at });
        let cell = cell.clone();
        cluster.spawn(async move {
            let result = call.await;
            cell.send(RoomMsg::Numbered { token, result });
        });
    }

    /// Acks a member's publish with its `seq`, once.
    fn ack(&self, waiting: &mut Waiting, seq: u64) {
        if waiting.acked {
            return;
        }
        waiting.acked = true;
        if let Publisher::Member { conn, id: Some(id), .. } = &waiting.publisher {
            if let Some((_, outbox)) = self.members.get(conn) {
                outbox.deliver(&ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode(), &self.metrics);
            }
        }
    }

    /// A publish of this room was numbered (or could not be): ack it; if
    /// it was never sent, deliver it here alone; if its fate is unknown,
    /// tell the publisher.
    fn numbered(&mut self, token: u64, result: Result<u64, RelayError>) {
        let Some(mut waiting) = self.cluster.as_mut().and_then(|c| c.waiting.remove(&token)) else { return };
        match result {
            Ok(seq) => {
                let came_back = waiting.acked;
                self.ack(&mut waiting, seq);
                // Numbered but not back, and the subscription is down: it
                // will not come back, so deliver it here.
                let lost = !came_back && self.cluster.as_ref().is_some_and(|c| !c.cluster.relay.is_connected());
                if lost && self.seq.fetch_max(seq, Ordering::Relaxed) < seq {
                    let frame =
                        ServerFrame::Message { room: &self.name, from: &waiting.from, data: &waiting.data, seq, ts: now_ms() }
                            .encode();
                    let except = match &waiting.publisher {
                        Publisher::Member { conn, echo: false, .. } => Some(*conn),
                        _ => None,
                    };
                    self.fan_out(&frame, except);
                    self.enqueued(waiting.at);
                } else if !came_back {
                    self.unechoed(seq, waiting.at);
                }
                if let Publisher::Server { reply } = waiting.publisher {
                    let _ = reply.send(seq);
                }
            }
            Err(RelayError::Unreachable(_)) if !waiting.acked => {
                let (seq, frame) = self.message(&waiting.from, &waiting.data);
                self.ack(&mut waiting, seq);
                match waiting.publisher {
                    Publisher::Member { conn, echo, .. } => self.fan_out(&frame, (!echo).then_some(conn)),
                    Publisher::Server { reply } => {
                        self.fan_out(&frame, None);
                        let _ = reply.send(seq);
                    }
                }
                self.enqueued(waiting.at);
            }
            // Sent, but unanswered: Redis may have numbered and published it
            // (then it arrives like any other), or not. Numbering it here
            // could give one message two numbers.
            Err(_) => match waiting.publisher {
                Publisher::Member { conn, id: Some(id), .. } if !waiting.acked => {
                    if let Some((_, outbox)) = self.members.get(&conn) {
                        let message = "the cluster backplane did not answer: the message may not have been delivered";
                        let error = ServerFrame::Error { code: ErrorCode::Internal, message, id: Some(&id) };
                        outbox.deliver(&error.encode(), &self.metrics);
                    }
                }
                // The dropped reply port answers the API caller 503.
                _ => {}
            },
        }
    }

    /// Remembers when a publish numbered ahead of its message's return
    /// reached the server; only the latest few are kept.
    fn unechoed(&mut self, seq: u64, at: Instant) {
        const KEPT: usize = 64;
        let Some(clustered) = self.cluster.as_mut() else { return };
        if clustered.unechoed.len() == KEPT {
            clustered.unechoed.pop_front();
        }
        clustered.unechoed.push_back((seq, at));
    }

    /// An envelope from the room's channel.
    fn relayed(&mut self, seq: Option<u64>, origin: Arc<str>, body: Body) {
        let Some(clustered) = self.cluster.as_mut() else { return };
        let own = origin == clustered.cluster.node;
        match body {
            Body::Message { from, data, ts, token, except, .. } => {
                let Some(seq) = seq else { return };
                // When this node's own publish reached the server.
                let mut at = None;
                if own {
                    if let Some(mut waiting) = clustered.waiting.remove(&token) {
                        at = Some(waiting.at);
                        self.ack(&mut waiting, seq);
                        if let Some(clustered) = self.cluster.as_mut() {
                            clustered.waiting.insert(token, waiting);
                        }
                    } else if let Some(i) = clustered.unechoed.iter().position(|&(s, _)| s == seq) {
                        at = clustered.unechoed.remove(i).map(|(_, at)| at);
                    }
                }
                // Only after Redis lost its counters can a number repeat.
                if self.seq.fetch_max(seq, Ordering::Relaxed) >= seq {
                    tracing::debug!(room = %self.name, seq, "dropped a message numbered below one delivered here");
                    return;
                }
                let Ok(data) = RawValue::from_string(data) else {
                    self.metrics.relay_errors.inc();
                    return;
                };
                let frame = ServerFrame::Message { room: &self.name, from: &from, data: &data, seq, ts }.encode();
                let except = if own { except.map(ConnId) } else { None };
                self.fan_out(&frame, except);
                if let Some(at) = at {
                    self.enqueued(at);
                }
            }
            Body::Presence { user, joined, .. } if !own => self.remote_change(origin, user.into(), joined),
            Body::Typing { user, typing, .. } if !own => {
                let frame = ServerFrame::Typing { room: &self.name, user: &user, typing }.encode();
                self.fan_out(&frame, None);
            }
            _ => {}
        }
    }

    /// `node` now has (or no longer has) `user` in the room.
    fn remote_change(&mut self, node: Arc<str>, user: Arc<str>, joined: bool) {
        let was = self.present(&user);
        let Some(clustered) = self.cluster.as_mut() else { return };
        let nodes = clustered.remote.entry(user.clone()).or_default();
        if joined {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        } else {
            nodes.retain(|n| *n != node);
            if nodes.is_empty() {
                clustered.remote.remove(&user);
            }
        }
        let now = self.present(&user);
        self.announce(&user, was, now);
    }

    /// Drops the users of dead `nodes`.
    fn nodes_gone(&mut self, nodes: &BTreeSet<Arc<str>>) {
        let Some(clustered) = self.cluster.as_mut() else { return };
        let mut changed = Vec::new();
        clustered.remote.retain(|user, on| {
            let before = on.len();
            on.retain(|n| !nodes.contains(n));
            if on.len() != before && on.is_empty() {
                changed.push(user.clone());
            }
            !on.is_empty()
        });
        for user in changed {
            let now = self.present(&user);
            self.announce(&user, true, now);
        }
    }

    /// Subscribes to the room's channel and reads the other nodes'
    /// members; membership changes wait until the answer is in.
    fn sync(&mut self, cell: &Arc<RoomCell>, initial: bool) {
        let floor = self.seq.load(Ordering::Relaxed);
        let users: Vec<String> = self.users.iter().map(|u| u.to_string()).collect();
        let Some(clustered) = self.cluster.as_mut() else { return };
        clustered.syncing = true;
        clustered.generation += 1;
        let generation = clustered.generation;
        let cluster = clustered.cluster.clone();
        let channel = Channel::Room(self.name.clone());
        let subscribed = cluster.checked("subscribe", cluster.relay.subscribe(&channel));
        let rewrite = (!initial)
            .then(|| cluster.checked("re-sync", cluster.directory.replace_room(&cluster.node, &self.name, users)));
        if floor > 0 {
            cluster.background("raise counter", cluster.relay.raise_counter(&channel, floor));
        }
        let (cell, name) = (cell.clone(), self.name.clone());
        cluster.clone().spawn(async move {
            let outcome = async {
                subscribed.await?;
                let changes = match rewrite {
                    Some(rewrite) => rewrite.await?,
                    None => Changes::default(),
                };
                let members = cluster.checked("presence query", cluster.directory.room_members(&name)).await?;
                Ok::<_, RelayError>(SyncOutcome { changes, members })
            };
            cell.send(RoomMsg::Synced { generation, outcome: outcome.await.ok() });
        });
    }

    /// Takes in what the latest sync learnt: tells the other nodes how this
    /// node's entries changed, and the members who arrived or left
    /// meanwhile. Returns whether the sync is over (an older one's answer
    /// is ignored: the latest is still on its way).
    fn synced(&mut self, generation: u64, outcome: Option<SyncOutcome>) -> bool {
        let Some(clustered) = self.cluster.as_mut() else { return true };
        if generation != clustered.generation {
            return false;
        }
        clustered.syncing = false;
        clustered.subscribed = outcome.is_some();
        let Some(SyncOutcome { changes, members }) = outcome else {
            tracing::warn!(room = %self.name, "cluster: room sync failed; serving it locally until the backplane is back");
            return true;
        };
        let cluster = clustered.cluster.clone();
        let channel = Channel::Room(self.name.clone());
        for (users, joined) in [(changes.removed, false), (changes.added, true)] {
            for user in users {
                cluster.publish(&channel, Body::Presence { room: self.name.to_string(), user, joined });
            }
        }
        let mut remote: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        for (node, user) in members {
            if *node != *cluster.node {
                remote.entry(user.into()).or_default().push(node.into());
            }
        }
        let old = std::mem::replace(&mut clustered.remote, remote);
        let affected: BTreeSet<Arc<str>> =
            old.keys().chain(self.cluster.as_ref().map(|c| c.remote.keys()).into_iter().flatten()).cloned().collect();
        for user in affected {
            let was = self.users.contains(&user) || old.contains_key(&user);
            let now = self.present(&user);
            self.announce(&user, was, now);
        }
        true
    }
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use parking_lot::Mutex;
    use serde_json::Value;

    use super::*;
    use crate::connection::testing::{collector, collector_with};
    use crate::metrics::Fault;
    use crate::rooms::RoomRegistry;
    use crate::supervisor;

    struct Fixture {
        rooms: RoomRegistry,
        metrics: Arc<Metrics>,
    }

    async fn fixture() -> Fixture {
        let metrics = Arc::new(Metrics::new());
        let tree = supervisor::start(4, metrics.clone(), &Default::default(), Arc::new(|_| {}), None).await.unwrap();
        Fixture { rooms: tree.rooms, metrics }
    }

    fn member(conn: u64, user: &str, capacity: usize) -> (Member, Arc<Mutex<Vec<String>>>) {
        let (outbox, frames) = collector(capacity);
        (Member { conn: ConnId(conn), user: user.into(), outbox }, frames)
    }

    /// Lets queued deliveries reach the collectors.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn taken(frames: &Mutex<Vec<String>>) -> Vec<Value> {
        frames.lock().drain(..).map(|f| serde_json::from_str(&f).unwrap()).collect()
    }

    fn names(users: &[Arc<str>]) -> Vec<&str> {
        users.iter().map(|u| &**u).collect()
    }

    fn data(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    /// Two nodes in one process, joined by the in-memory relay and directory.
    async fn clustered_pair() -> (Fixture, Fixture) {
        use crate::cluster::directory::MemoryDirectory;
        use crate::cluster::relay::{MemoryHub, MemoryRelay};
        use crate::cluster::Cluster;
        use crate::connection::registry::Registry;
        use crate::supervisor::Clustering;
        let hub = Arc::new(MemoryHub::default());
        let directory = Arc::new(MemoryDirectory::default());
        let mut nodes = Vec::new();
        for id in ["a", "b"] {
            let metrics = Arc::new(Metrics::new());
            let relay = Arc::new(MemoryRelay::new(hub.clone()));
            let cluster = Cluster::new(id.into(), relay, directory.clone(), metrics.clone(), Duration::from_secs(60));
            let clustering = Clustering { cluster, connections: Arc::new(Registry::default()) };
            let tree = supervisor::start(2, metrics.clone(), &Default::default(), Arc::new(|_| {}), Some(clustering))
                .await
                .unwrap();
            nodes.push(Fixture { rooms: tree.rooms, metrics });
        }
        let b = nodes.pop().unwrap();
        (nodes.pop().unwrap(), b)
    }

    #[actix_web::test]
    async fn clustered_rooms_share_seq_and_users_and_drop_dead_nodes() {
        let (a, b) = clustered_pair().await;
        let (alice, alice_frames) = member(1, "alice", 64);
        let (bob, bob_frames) = member(1, "bob", 64);
        let (alice_tab, _) = member(2, "alice", 64);
        let (room_a, users) = a.rooms.join("r".into(), alice).await.unwrap();
        assert_eq!(names(&users), ["alice"]);
        let (room_b, users) = b.rooms.join("r".into(), bob).await.unwrap();
        assert_eq!(names(&users), ["alice", "bob"], "the join lists the other node's users");
        // A second tab of alice, on b: still one alice, no user_joined for her.
        let (_, users) = b.rooms.join("r".into(), alice_tab).await.unwrap();
        assert_eq!(names(&users), ["alice", "bob"]);
        settle().await;
        let joined: Vec<_> = taken(&alice_frames).into_iter().filter(|f| f["type"] == "user_joined").collect();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0]["user"], "bob");
        assert!(taken(&bob_frames).iter().all(|f| f["type"] != "user_joined"), "bob joined after alice");

        room_a.publish(ConnId(1), "alice".into(), data("1"), true, Some(data("\"x\"")));
        room_b.publish(ConnId(1), "bob".into(), data("2"), true, None);
        room_a.publish(ConnId(1), "alice".into(), data("3"), true, None);
        settle().await;
        let seqs = |frames: &[Value]| -> Vec<(u64, Value)> {
            frames.iter().filter(|f| f["type"] == "message").map(|f| (f["seq"].as_u64().unwrap(), f["data"].clone())).collect()
        };
        let at_a = taken(&alice_frames);
        assert_eq!(at_a[0]["type"], "ack", "the ack comes first: {at_a:?}");
        assert_eq!(seqs(&at_a), seqs(&taken(&bob_frames)), "one numbering on both nodes");
        assert_eq!(seqs(&at_a).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);

        // Node b dies: a drops its users; alice is still in the room on a.
        a.rooms.nodes_gone(Arc::new(std::iter::once(Arc::from("b")).collect()));
        settle().await;
        let left = taken(&alice_frames);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!((&left[0]["type"], &left[0]["user"]), (&"user_left".into(), &"bob".into()));
    }

    #[actix_web::test]
    async fn fans_out_with_increasing_seq_and_acks_the_publisher() {
        let f = fixture().await;
        let (alice, alice_frames) = member(1, "alice", 16);
        let (bob, bob_frames) = member(2, "bob", 16);
        let (room, users) = f.rooms.join("r".into(), alice).await.unwrap();
        assert_eq!(names(&users), ["alice"]);
        let (_, users) = f.rooms.join("r".into(), bob).await.unwrap();
        assert_eq!(names(&users), ["alice", "bob"]);
        let id = data("\"p1\"");
        room.publish(ConnId(1), "alice".into(), data(r#"{"n":1}"#), true, Some(id));
        room.publish(ConnId(1), "alice".into(), data("null"), false, None);
        settle().await;
        let alice = taken(&alice_frames);
        assert_eq!(alice[0]["type"], "user_joined");
        assert_eq!((&alice[1]["type"], &alice[1]["seq"], &alice[1]["id"]), (&"ack".into(), &1.into(), &"p1".into()));
        assert_eq!((&alice[2]["type"], &alice[2]["seq"]), (&"message".into(), &1.into()));
        assert_eq!(alice.len(), 3, "echo:false keeps the second message from its publisher");
        let bob = taken(&bob_frames);
        let seqs: Vec<_> = bob.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(bob[0]["data"], serde_json::json!({"n": 1}));
        assert_eq!(bob[1]["from"], "alice");
    }

    #[actix_web::test]
    async fn an_idle_room_keeps_no_queue_and_stays_small() {
        let f = fixture().await;
        let (alice, _) = member(1, "alice", 16);
        let (handle, _) = f.rooms.join("r".into(), alice).await.unwrap();
        handle.publish(ConnId(1), "alice".into(), data("1"), true, None);
        settle().await;
        assert_eq!(handle.room.mailbox.buffered(), 0, "the queue's buffer went with its last message");
        let (cell, state, msg) =
            (std::mem::size_of::<RoomCell>(), std::mem::size_of::<RoomState>(), std::mem::size_of::<RoomMsg>());
        println!("RoomCell: {cell} bytes, RoomState: {state} bytes, RoomMsg: {msg} bytes");
        assert!(cell <= 240, "RoomCell grew to {cell} bytes");
        assert!(msg <= 136, "RoomMsg grew to {msg} bytes");
    }

    #[actix_web::test]
    async fn counts_users_not_connections() {
        let f = fixture().await;
        let (watcher, watcher_frames) = member(1, "watcher", 16);
        f.rooms.join("r".into(), watcher).await.unwrap();
        for conn in 2..5 {
            let (tab, _) = member(conn, "alice", 16);
            let (_, users) = f.rooms.join("r".into(), tab).await.unwrap();
            assert_eq!(names(&users), ["alice", "watcher"]);
        }
        f.rooms.leave("r".into(), ConnId(2));
        f.rooms.leave("r".into(), ConnId(3));
        settle().await;
        let kinds: Vec<_> = taken(&watcher_frames).iter().map(|m| m["type"].clone()).collect();
        assert_eq!(kinds, ["user_joined"]);
        f.rooms.leave("r".into(), ConnId(4));
        settle().await;
        let left = taken(&watcher_frames);
        assert_eq!((&left[0]["type"], &left[0]["user"]), (&"user_left".into(), &"alice".into()));
    }

    #[actix_web::test]
    async fn empty_rooms_retire_but_seq_lives_on() {
        let f = fixture().await;
        let (alice, _) = member(1, "alice", 16);
        let (room, _) = f.rooms.join("r".into(), alice).await.unwrap();
        room.publish(ConnId(1), "alice".into(), data("1"), true, None);
        room.publish(ConnId(1), "alice".into(), data("2"), true, None);
        f.rooms.leave("r".into(), ConnId(1));
        settle().await;
        assert_eq!(f.metrics.rooms.get(), 0, "the empty room stopped");
        assert_eq!(f.rooms.last_seq("r".into()).await.unwrap(), 2);
        let (bob, bob_frames) = member(2, "bob", 16);
        let (room, _) = f.rooms.join("r".into(), bob).await.unwrap();
        assert_eq!(f.metrics.rooms.get(), 1);
        room.publish(ConnId(2), "bob".into(), data("3"), true, None);
        settle().await;
        assert_eq!(taken(&bob_frames)[0]["seq"], 3);
    }

    #[actix_web::test]
    async fn a_join_racing_the_last_leave_is_not_lost() {
        let f = fixture().await;
        for round in 0..50u64 {
            let (a, _) = member(round * 2, "a", 16);
            let (b, _) = member(round * 2 + 1, "b", 16);
            f.rooms.join("race".into(), a).await.unwrap();
            f.rooms.leave("race".into(), ConnId(round * 2));
            let (room, users) = f.rooms.join("race".into(), b).await.unwrap();
            assert_eq!(names(&users), ["b"], "round {round}");
            room.publish(ConnId(round * 2 + 1), "b".into(), data("0"), true, None);
            f.rooms.leave("race".into(), ConnId(round * 2 + 1));
        }
        settle().await;
        assert_eq!(f.rooms.last_seq("race".into()).await.unwrap(), 50, "every publish found a live room");
    }

    #[actix_web::test]
    async fn server_publishes_number_on_whether_or_not_the_room_is_alive() {
        let f = fixture().await;
        let publish = || f.rooms.publish_from_server("r".into(), "server".into(), data("0").to_owned());
        assert_eq!(publish().await.unwrap(), 1, "a room nobody is in still counts");
        for round in 0..20u64 {
            let (a, frames) = member(round, "a", 16);
            f.rooms.join("r".into(), a).await.unwrap();
            let seq = publish().await.unwrap();
            assert_eq!(seq, round * 2 + 2);
            f.rooms.leave("r".into(), ConnId(round));
            // Racing the room's retirement, the publish is neither lost nor numbered twice.
            assert_eq!(publish().await.unwrap(), round * 2 + 3, "round {round}");
            settle().await;
            let got = taken(&frames);
            assert_eq!((&got[0]["seq"], &got[0]["from"]), (&seq.into(), &"server".into()), "round {round}");
        }
    }

    #[actix_web::test]
    async fn a_slow_consumer_leaves_and_everyone_else_gets_everything() {
        let f = fixture().await;
        let (slow, slow_frames) = member(1, "slow", 1);
        let (fast, fast_frames) = member(2, "fast", 1000);
        let (room, _) = f.rooms.join("r".into(), slow).await.unwrap();
        f.rooms.join("r".into(), fast).await.unwrap();
        for _ in 0..200 {
            room.publish(ConnId(2), "fast".into(), data("0"), true, None);
        }
        settle().await;
        let fast = taken(&fast_frames);
        assert_eq!(fast.iter().filter(|m| m["type"] == "message").count(), 200);
        let left: Vec<_> = fast.iter().filter(|m| m["type"] == "user_left").collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["user"], "slow");
        assert_eq!(f.metrics.connections_dropped(Fault::SlowConsumer), 1);
        let slow = slow_frames.lock().clone();
        assert_eq!(slow.last().map(String::as_str), Some("close 4008"), "{slow:?}");
        assert!(slow.len() < 10, "nothing more was queued for it: {slow:?}");
    }

    #[actix_web::test]
    async fn members_get_only_the_frame_kinds_their_transport_carries() {
        let f = fixture().await;
        let (outbox, listener_frames) = collector_with(4, |kind| kind == ServerKind::Message);
        let listener = Member { conn: ConnId(1), user: "listener".into(), outbox };
        let (talker, _) = member(2, "talker", 1000);
        let (room, _) = f.rooms.join("r".into(), listener).await.unwrap();
        f.rooms.join("r".into(), talker).await.unwrap();
        // Ten times its queue in frames it does not carry: none is queued.
        for _ in 0..40 {
            room.typing(ConnId(2), "talker".into(), true);
        }
        room.publish(ConnId(2), "talker".into(), data("1"), true, None);
        settle().await;
        let got = taken(&listener_frames);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0]["type"].as_str(), got[0]["seq"].as_u64()), (Some("message"), Some(1)));
        assert_eq!(f.metrics.connections_dropped(Fault::SlowConsumer), 0);
    }
}
