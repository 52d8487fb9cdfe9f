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
//! about exactly those two moments. It keeps the number of distinct users
//! (with clustering, on every node) as a number that those moments move,
//! so `count` never counts a list.
//!
//! A room behaves as its namespace says, which its stream carries from the
//! room's first moment on this node: whether it lists its users (without,
//! it hashes them, and a join costs the same in a room of any size),
//! whether members hear `user_joined`/`user_left`, and what a member whose
//! queue is full gets from its frames (see [`Outbox::deliver_in`]).
//!
//! A room's members and its queue of messages live in its [`RoomCell`],
//! which its shard keeps. A room costs no task of its own: a message for it
//! schedules the room on its shard (one `ShardMsg::Run` in flight at most),
//! and the shard's actor takes the room's messages one at a time and applies
//! them in order, so the room has one writer and a bounded turn like any
//! actor. A panic while applying one loses that message only: the room
//! starts its next life over the same cell (members, per-user counts and
//! `seq` untouched) and carries on with the messages that waited.
//!
//! This module is the room on its own node; [`cluster`] is its side in a
//! cluster (its channel, the other nodes' members, numbered publishes).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;
use ractor::RpcReplyPort;
use serde_json::value::RawValue;

use super::history::{Archive, Stream};
use super::shard::ShardMsg;
use super::users::Users;
use super::{RoomsFull, Since};
use crate::cluster::codec::Body;
use crate::cluster::directory::Changes;
use crate::cluster::relay::{Channel, Pending, Recorded, RelayError};
use crate::cluster::Membership;
use crate::delivery::{ConnId, Delivery, Member, Outbox};
use crate::ids::{NodeId, RoomName, UserId};
use crate::metrics::{ActorKind, Metrics};
use crate::presence::Presence;
use crate::protocol::{now_ms, Encoded, ErrorCode, ServerFrame, ServerKind, UserList};
use crate::metrics::TransportKind;
use crate::config::SlowConsumer;
use crate::supervisor::{Actor, Supervised, Failure, Mailbox};

mod cluster;

use cluster::{Joining, Publisher, Side};
pub(crate) use cluster::SyncOutcome;

/// A publish on its way to a room.
pub(crate) struct Publication {
    pub conn: ConnId,
    pub user: UserId,
    pub data: Box<RawValue>,
    /// Whether the publishing connection receives its own message.
    pub echo: bool,
    /// The client frame's `id`; with one, the publisher gets an `ack` with the `seq`.
    pub id: Option<Box<RawValue>>,
    /// When the frame reached the server.
    pub at: Instant,
}

/// What a join answers: the room to publish to, the users now in it, and
/// for a join with `since`, whether the messages after it followed.
pub(crate) struct JoinReply {
    pub room: Arc<RoomCell>,
    pub users: UserList,
    pub recovered: Option<bool>,
}

/// Messages of a room. Joins, leaves and server publishes arrive through the
/// registry shard.
pub(crate) enum RoomMsg {
    /// `id` is the join request's, echoed in the `joined` the room writes;
    /// with `since`, the messages after it are replayed.
    Join {
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Box<Since>>,
        reply: RpcReplyPort<Result<JoinReply, RoomsFull>>,
    },
    /// Cluster: a join set aside may come in (with the history read for it).
    /// `ticket` names the join it is for (an answer for an earlier join of
    /// the same connection is ignored).
    Admitted { conn: ConnId, ticket: u64, recorded: Option<Box<Result<Recorded, RelayError>>> },
    /// The users in the room (always `Some`: the shard answers `None` for a
    /// room that is not alive).
    Presence { reply: RpcReplyPort<Option<UserList>> },
    Leave { conn: ConnId },
    Publish(Publication),
    /// A publish from the server API, sent to every member; the reply is its `seq`.
    ServerPublish {
        from: UserId,
        data: Box<RawValue>,
        reply: RpcReplyPort<u64>,
        /// When the request reached the server.
        at: Instant,
    },
    Typing {
        conn: ConnId,
        user: UserId,
        typing: bool,
    },
    /// Cluster: an envelope on the room's channel, from another node or
    /// this one's own (a numbered message comes back to its origin too).
    Relayed {
        seq: Option<u64>,
        origin: NodeId,
        body: Body,
    },
    /// Cluster: subscribe to the room's channel and read who the other
    /// nodes have in it; not `initial`, also rewrite this node's entries
    /// (after an outage).
    Sync {
        initial: bool,
    },
    /// Cluster: how sync number `generation` went (`None`: it failed).
    Synced { generation: u64, outcome: Option<Box<SyncOutcome>> },
    /// Cluster: the number a publish of this room was given, or why none.
    Numbered {
        token: u64,
        result: Result<u64, RelayError>,
    },
    /// Cluster: these nodes died; their users are no longer in the room.
    NodesGone(Arc<BTreeSet<NodeId>>),
    /// Panics the actor (fault injection).
    Crash,
    /// Holds the room (and its shard's turn) for this long, so that what
    /// is asked of it meanwhile goes unanswered (fault injection).
    Stall(std::time::Duration),
}

/// A room: its queue and its state, which outlive any one life of it.
pub(crate) struct RoomCell {
    pub name: RoomName,
    /// What the room's namespace allows clients, read without the room:
    /// whether they may publish and send `typing`.
    pub client_publish: bool,
    mailbox: Mailbox<RoomMsg>,
    /// The shard that runs the room, and is told when it is left empty.
    shard: Arc<Mailbox<ShardMsg>>,
    /// Lives so far: one more after every panic, and after its shard restarts.
    lives: AtomicU32,
    /// Dropped by its shard: what still arrives is not handled.
    retired: AtomicBool,
    state: Mutex<RoomState>,
}

/// A room's members and bookkeeping.
pub(crate) struct RoomState {
    name: RoomName,
    /// Its numbering and (on a single node) its history.
    stream: Arc<Stream>,
    archive: Arc<Archive>,
    presence: Presence,
    metrics: Arc<Metrics>,
    /// Keyed by connection ids, which the node hands out in sequence: a
    /// hasher without a random state is enough, and 16 bytes smaller.
    members: HashMap<ConnId, (UserId, Outbox), FxBuildHasher>,
    /// Connections per user in this room (kept sorted when the room lists
    /// them: a join in a big room lists them without sorting).
    users: Users,
    /// Distinct users in the room, here and on other nodes: moved by every
    /// arrival and departure, never counted from a list.
    count: u32,
    /// The users (here and, with clustering, on other nodes) as `joined`
    /// and `presence` list them: built on the first ask after a change of
    /// the set, shared by every reply until the next (kept from two users
    /// on: one name is built on each ask).
    listing: Option<UserList>,
    /// Joins and server publishes handled so far; the shard compares it with
    /// what it forwarded before it lets an empty room stop, so nothing the
    /// shard sent is ever lost to a stop.
    /// Wraps around (both sides do): only equality is asked of it, and 2³²
    /// messages are never on their way at once.
    seen: u32,
    /// Its side in a cluster (nothing on a single node).
    cluster: Side,
}

impl RoomCell {
    pub(crate) fn new(
        name: RoomName,
        stream: Arc<Stream>,
        archive: Arc<Archive>,
        shard: Arc<Mailbox<ShardMsg>>,
        presence: Presence,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Membership>>,
    ) -> Self {
        let cluster = Side::new(cluster);
        let state = RoomState {
            name: name.clone(),
            users: Users::new(stream.namespace.presence),
            count: 0,
            stream,
            archive,
            presence,
            metrics,
            members: HashMap::default(),
            listing: None,
            seen: 0,
            cluster,
        };
        let mailbox = Mailbox::counted(state.metrics.mailbox_backlog(ActorKind::Room).clone());
        let lives = AtomicU32::new(1);
        let client_publish = state.stream.namespace.client_publish;
        Self { name, client_publish, mailbox, shard, lives, retired: AtomicBool::new(false), state: Mutex::new(state) }
    }

    /// Queues `msg` for the room, and schedules the room on its shard
    /// unless it is already.
    pub(crate) fn send(self: &Arc<Self>, msg: RoomMsg) {
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
    pub(crate) fn run<E>(self: &Arc<Self>, mut failed: impl FnMut(&Arc<Self>, String) -> Result<(), E>) -> Result<(), E> {
        let mut actor = self.clone();
        let mut turn = self.mailbox.turn();
        while let Some(msg) = turn.next() {
            if self.retired.load(Ordering::Acquire) {
                continue;
            }
            let failure = match catch_unwind(AssertUnwindSafe(|| actor.handle(msg))) {
                Ok(outcome) => outcome.err().map(|error| error.to_string()),
                Err(panic) => Some(panic_message(&*panic)),
            };
            if let Some(error) = failure {
                failed(self, error)?;
                self.lives.fetch_add(1, Ordering::AcqRel);
                // The failed step may have left the room empty before it
                // could say so.
                let state = self.state.lock();
                if state.is_empty() {
                    self.shard.send(ShardMsg::Empty { room: self.clone(), seen: state.seen });
                }
            }
        }
        if turn.rescheduled() {
            self.schedule();
        } else {
            // An idle room keeps no queue: a message is 120 bytes, and a
            // queue that held one keeps room for four.
            turn.release();
        }
        Ok(())
    }

    /// A new life after its shard restarted, with a turn scheduled if
    /// messages wait (the shard may have lost the one it had in hand).
    /// False, and nothing done, when the room has no members left (none
    /// joining, nothing awaited): its shard retires it.
    pub(crate) fn revive(self: &Arc<Self>) -> bool {
        if self.state.lock().is_empty() {
            return false;
        }
        self.lives.fetch_add(1, Ordering::AcqRel);
        if self.mailbox.reschedule() {
            self.schedule();
        }
        true
    }

    /// Marks the room dropped by its shard.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Which life the room is in: it changes when the room restarts.
    pub(crate) fn life(&self) -> u32 {
        self.lives.load(Ordering::Acquire)
    }

    fn apply(self: &Arc<Self>, msg: RoomMsg) {
        let mut state = self.state.lock();
        // Counted before anything else, so a message the room fails on still
        // counts as seen and the shard's retire check stays in step.
        if matches!(msg, RoomMsg::Join { .. } | RoomMsg::ServerPublish { .. }) {
            state.seen = state.seen.wrapping_add(1);
        }
        if let Some(msg) = state.cluster.defer(msg) {
            self.apply_to(&mut state, msg);
        }
        if state.is_empty() {
            let empty = ShardMsg::Empty { room: self.clone(), seen: state.seen };
            self.shard.send(empty);
        }
    }

    fn apply_to(self: &Arc<Self>, state: &mut RoomState, msg: RoomMsg) {
        match msg {
            // A join its connection stopped waiting for (answered
            // `INTERNAL`: the room was too busy) does not happen, so the
            // members hear nothing of it.
            RoomMsg::Join { reply, .. } if reply.is_closed() => {}
            // A second join while the first waits goes after it.
            RoomMsg::Join { member, id, since, reply } if state.cluster.is_joining(member.conn) => {
                let conn = member.conn;
                state.cluster.queue_behind(conn, RoomMsg::Join { member, id, since, reply });
            }
            RoomMsg::Join { member, id, since, reply } => state.join_request(self, member, id, since, reply),
            RoomMsg::Admitted { conn, ticket, recorded } => {
                for msg in state.admitted(self, conn, ticket, recorded.map(|read| *read)) {
                    self.apply_to(state, msg);
                }
            }
            RoomMsg::Presence { reply } => {
                let _ = reply.send(Some(state.listing()));
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
                state.cluster.typing(&state.name, user, typing);
            }
            RoomMsg::Relayed { seq, origin, body } => {
                state.relayed(seq, origin, body);
                self.admit_caught_up(state, false);
            }
            RoomMsg::Sync { initial } => state.sync(self, initial),
            RoomMsg::Synced { generation, outcome } => {
                if state.synced(generation, outcome) {
                    self.admit_caught_up(state, true);
                    while let Some(msg) = state.cluster.next_deferred() {
                        self.apply_to(state, msg);
                    }
                }
            }
            RoomMsg::Numbered { token, result } => state.numbered(token, result),
            RoomMsg::NodesGone(nodes) => state.nodes_gone(&nodes),
            RoomMsg::Crash => {}
            RoomMsg::Stall(time) => std::thread::sleep(time),
        }
    }
}

impl RoomCell {
    /// Lets in the joining members the room has caught up with (`all`:
    /// every one that waits for that).
    fn admit_caught_up(self: &Arc<Self>, state: &mut RoomState, all: bool) {
        for (conn, ticket) in state.caught_up(all) {
            for msg in state.admitted(self, conn, ticket, None) {
                self.apply_to(state, msg);
            }
        }
    }
}

/// A room is an actor without a runner of its own: its shard runs it
/// ([`RoomCell::run`]).
impl Actor for Arc<RoomCell> {
    type Msg = RoomMsg;
    const KIND: ActorKind = ActorKind::Room;

    fn handle(&mut self, msg: RoomMsg) -> Result<(), Failure> {
        if let RoomMsg::Crash = msg {
            panic!("fault injection: room {}", self.name);
        }
        self.apply(msg);
        Ok(())
    }
}

impl Supervised for Arc<RoomCell> {
    fn mailbox(&self) -> &Mailbox<RoomMsg> {
        &self.mailbox
    }
}

/// What a new member is sent first (see [`RoomState::greet`]).
struct Greeting<'a> {
    id: Option<&'a RawValue>,
    since: Option<&'a Since>,
    /// The room's latest `seq` as of the join.
    latest: u64,
    epoch: &'a Arc<str>,
    /// For a join with `since`: the messages after it, or `None` when they
    /// cannot all be replayed.
    replay: Option<Option<Vec<Encoded>>>,
    /// What the room sent the member while it waited.
    held: Vec<Encoded>,
}

impl RoomState {
    /// No member, none joining, nothing awaited: the room may retire.
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.cluster.is_settled()
    }

    /// The users in the room (on every node, with clustering), each once and
    /// sorted: the list built since the set last changed, or a new one. A
    /// room that lists no one gives only its count.
    fn listing(&mut self) -> UserList {
        if !self.stream.namespace.presence {
            return UserList::unlisted(self.count as usize);
        }
        if let Some(listing) = &self.listing {
            return listing.clone();
        }
        let mut remote = self.cluster.remote_users().peekable();
        let listing = if remote.peek().is_none() {
            UserList::new(self.users.iter())
        } else {
            let all: BTreeSet<&UserId> = self.users.iter().chain(remote).collect();
            UserList::new(all)
        };
        debug_assert_eq!(listing.len(), self.count as usize, "the count is the number of users listed");
        // A list of one name costs less to build than to keep (about 80
        // bytes, in every idle room of one user).
        if listing.len() > 1 {
            self.listing = Some(listing.clone());
        }
        listing
    }

    /// Whether `user` is in the room, here or on another node.
    fn present(&self, user: &str) -> bool {
        self.users.contains(user) || self.cluster.has_remote(user)
    }

    /// Counts `user` in or out of the room if that changed (`was` and `now`:
    /// whether it is in, here or on another node), and tells the members
    /// unless the room's namespace keeps join events quiet.
    fn announce(&mut self, user: &str, was: bool, now: bool) {
        if let Some(frame) = self.counted(user, was, now) {
            self.fan_out(&frame, None);
        }
    }

    /// The counting half of [`Self::announce`]: returns the frame to tell
    /// the members, if any. A change of many users counts them all before
    /// telling anyone, as telling may remove members (a full queue, a
    /// closed connection), which counts them out on the spot.
    fn counted(&mut self, user: &str, was: bool, now: bool) -> Option<Encoded> {
        match (was, now) {
            (false, true) => self.count += 1,
            (true, false) => {
                debug_assert!(self.count > 0, "{user} counted out of an empty room");
                self.count = self.count.saturating_sub(1);
            }
            _ => return None,
        }
        self.listing = None;
        if !self.stream.namespace.join_events {
            return None;
        }
        Some(match now {
            true => ServerFrame::UserJoined { room: &self.name, user }.encode(),
            false => ServerFrame::UserLeft { room: &self.name, user }.encode(),
        })
    }
    /// Queues `frame` for every member but `except`. Members that cannot take
    /// it (slow consumers, closed connections) leave the room, and the
    /// `user_left` that may tell of it goes out the same way: one loop over
    /// a list of the departed, never a call within a call, however many
    /// members are found gone in turn.
    fn fan_out(&mut self, frame: &Encoded, except: Option<ConnId>) {
        let mut gone = self.deliver_all(frame, except);
        while let Some(conn) = gone.pop() {
            if let Some(told) = self.drop_member(conn) {
                gone.extend(self.deliver_all(&told, None));
            }
        }
    }

    /// Queues `frame` for every member but `except`; returns the members
    /// that could not take it.
    fn deliver_all(&mut self, frame: &Encoded, except: Option<ConnId>) -> Vec<ConnId> {
        let mut gone = Vec::new();
        // Counted once per publish rather than once per member: the fan-out
        // loop is one write per member and nothing else.
        let mut written = [0u64; TransportKind::ALL.len()];
        let mut queued = 0;
        // Members that already have this message (see `Side::has_seen`).
        let seen = self.cluster.seen_by(frame);
        let policy = self.stream.namespace.slow_consumer;
        for (conn, (_, outbox)) in &self.members {
            if Some(*conn) == except || seen.as_ref().is_some_and(|seen| seen(*conn)) {
                continue;
            }
            match outbox.deliver_in_uncounted(frame, &self.name, policy, &self.metrics) {
                Delivery::Queued => {
                    queued += 1;
                    if outbox.carries(frame.kind) {
                        written[outbox.transport() as usize] += 1;
                    }
                }
                // Slow, and staying: its room's policy dealt with the frame.
                Delivery::Skipped | Delivery::Kept => {}
                Delivery::Full | Delivery::Closed => gone.push(*conn),
            }
        }
        drop(seen);
        for (transport, frames) in TransportKind::ALL.into_iter().zip(written) {
            if frames > 0 {
                self.metrics.frames_out(frame.kind, frames);
                self.metrics.bytes_out(transport, frames as usize * frame.text().len());
            }
        }
        if frame.kind == ServerKind::Message {
            self.metrics.delivered.inc_by(queued);
        }
        self.cluster.hold(frame, except, policy, &self.metrics);
        gone
    }

    /// Adds a member. With clustering, returns the directory write of a
    /// user new to the room on this node. The member is added last: what
    /// the join itself sends (a `user_joined`, and the `user_left` of any
    /// member found gone on the way) is not for it, and its `joined`, which
    /// the caller writes next, is the first frame of the room it gets.
    fn join(&mut self, member: Member) -> Option<Pending<()>> {
        if self.members.contains_key(&member.conn) {
            return None;
        }
        let elsewhere = self.present(&member.user);
        let mut written = None;
        if self.users.add(&member.user) {
            self.listing = None;
            self.presence.room_joined(self.name.clone(), member.user.clone());
            written = self.cluster.user_joined(&self.name, &member.user);
            self.announce(&member.user, elsewhere, true);
        }
        self.members.insert(member.conn, (member.user, member.outbox));
        self.metrics.memberships.inc();
        written
    }

    /// Removes the member (or joining member) `conn`, telling the others
    /// if its user left.
    fn remove(&mut self, conn: ConnId) {
        if let Some(told) = self.drop_member(conn) {
            self.fan_out(&told, None);
        }
    }

    /// [`Self::remove`] but for the telling: returns the `user_left` to
    /// send, if any.
    fn drop_member(&mut self, conn: ConnId) -> Option<Encoded> {
        self.cluster.left(conn);
        let (user, outbox) = match self.members.remove(&conn) {
            Some(member) => {
                crate::memory::shrink_sparse(&mut self.members);
                member
            }
            None => self.cluster.forget_joining(conn)?,
        };
        if self.stream.namespace.slow_consumer == SlowConsumer::Latest || outbox.tracks_positions() {
            outbox.forget_room(&self.name);
        }
        self.metrics.memberships.dec();
        if !self.users.remove(&user) {
            return None;
        }
        self.presence.room_left(self.name.clone(), user.clone());
        self.cluster.user_left(&self.name, &user);
        let now = self.present(&user);
        self.counted(&user, true, now)
    }

    /// Takes the next `seq` and encodes the `message` frame that carries
    /// it; on a single node, keeps it in the room's history too.
    fn message(&mut self, from: &str, data: &RawValue) -> (u64, Encoded) {
        let build = |seq| ServerFrame::Message { room: &self.name, from, data, seq, ts: now_ms() }.encode();
        if self.cluster.is_clustered() {
            // Numbered here only while the cluster is away: such a message
            // is in no history, and the room's numbering is no longer the
            // cluster's (its epoch changes when the room re-syncs).
            self.cluster.numbered_alone();
            let seq = self.stream.seq.fetch_add(1, Ordering::Relaxed) + 1;
            return (seq, build(seq));
        }
        self.archive.publish(&self.stream, build)
    }

    /// Handles a join: at once, or (with clustering) once what it waits for
    /// is done, the member meanwhile kept aside (see `cluster`).
    fn join_request(
        &mut self,
        cell: &Arc<RoomCell>,
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Box<Since>>,
        reply: RpcReplyPort<Result<JoinReply, RoomsFull>>,
    ) {
        let (conn, outbox) = (member.conn, member.outbox.clone());
        let was_member = self.members.contains_key(&conn);
        let written = self.join(member);
        if self.cluster.is_clustered() && (written.is_some() || since.is_some()) {
            let (user, outbox) = self.members.remove(&conn).expect("the member was just added");
            let latest = self.stream.latest();
                let joining = Joining {
                user,
                outbox,
                id,
                since,
                latest,
                reply,
                was_member,
                ticket: 0,
                held: Vec::new(),
                held_bytes: 0,
                overflowed: false,
                newest: None,
                then: Vec::new(),
                recorded: None,
            };
            return self.wait_for(cell, conn, joining, written);
        }
        // A single node: the snapshot of history and the join are this one step.
        let epoch = self.epoch();
        let (latest, replay) = match &since {
            None => (self.stream.latest(), None),
            Some(since) => {
                let replay = self.archive.replay(&self.stream, since.seq);
                let same_epoch = since.epoch.as_deref().is_none_or(|e| *e == *epoch);
                (replay.latest, Some(replay.frames.filter(|_| same_epoch)))
            }
        };
        let greeting = Greeting { id: id.as_deref(), since: since.as_deref(), latest, epoch: &epoch, replay, held: Vec::new() };
        let (users, recovered) = self.greet(&outbox, greeting);
        let _ = reply.send(Ok(JoinReply { room: cell.clone(), users, recovered }));
    }

    /// The room's epoch: the node's on a single node; with clustering, the
    /// one Redis holds for the room (this node's while it could not be read).
    fn epoch(&self) -> Arc<str> {
        self.cluster.epoch().unwrap_or_else(|| self.archive.epoch().clone())
    }

    /// Writes a new member's first frames: `joined` (on an SSE stream, only
    /// the event of a room it could not recover, and its position), then
    /// the messages replayed, then what the room sent it while it waited.
    /// Returns the users as `joined` listed them, and whether the join
    /// recovered what it asked for.
    fn greet(&mut self, outbox: &Outbox, greeting: Greeting<'_>) -> (UserList, Option<bool>) {
        let Greeting { id, since, latest, epoch, replay, held } = greeting;
        let recovered = replay.as_ref().map(Option::is_some);
        let stream = outbox.keeps_positions();
        let users = if stream { UserList::empty() } else { self.listing() };
        if outbox.tracks_positions() {
            let from = match (since, recovered) {
                (Some(since), Some(true)) => since.seq,
                _ => latest,
            };
            outbox.track(&self.name, epoch.clone(), from);
        }
        if stream {
            if recovered == Some(false) {
                let frame = ServerFrame::Unrecovered { room: &self.name, recovered: false, seq: latest, epoch };
                outbox.deliver(&frame.encode(), &self.metrics);
            }
        } else {
            let count = self.count as usize;
            let joined = ServerFrame::Joined { room: &self.name, count, users: &users, seq: latest, epoch, recovered, id };
            outbox.deliver(&joined.encode(), &self.metrics);
        }
        if let Some(recovered) = recovered {
            self.metrics.recovery(recovered);
        }
        if let Some(Some(frames)) = replay {
            self.metrics.replayed.inc_by(frames.len() as u64);
            for frame in &frames {
                self.deliver(outbox, frame);
            }
        }
        for frame in &held {
            self.deliver(outbox, frame);
        }
        (users, recovered)
    }

    /// Queues one of the room's frames for one member, as its namespace's
    /// `slow_consumer` policy says.
    fn deliver(&self, outbox: &Outbox, frame: &Encoded) {
        outbox.deliver_in(frame, &self.name, self.stream.namespace.slow_consumer, &self.metrics);
    }

    /// Sends `frame` to the member `conn`, or keeps it for a member still
    /// joining.
    fn send_to(&mut self, conn: ConnId, frame: &Encoded) {
        match self.members.get(&conn) {
            Some((_, outbox)) => {
                outbox.deliver(frame, &self.metrics);
            }
            None => self.cluster.hold_for(conn, frame, &self.metrics),
        }
    }

    fn publish(&mut self, publication: Publication) {
        let (seq, frame) = self.message(&publication.user, &publication.data);
        if let Some(id) = &publication.id {
            self.send_to(publication.conn, &ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode());
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
mod tests;
