//! Rooms: a registry split into shards by the hash of the room name, each
//! shard owning its rooms and supervising their actors.
//!
//! - [`shard`]: the registry shard actor (creates, retires and remembers rooms).
//! - [`room`]: a room, an actor its shard runs (members, fan-out, `seq`).
//! - [`history`]: what each room keeps of its messages, node-wide bounds.
//! - [`namespace`]: the options a room takes from its name's prefix.
//!
//! [`RoomRegistry`] is the handle connections use. Joins on rooms in different
//! shards never queue behind each other, and after a join a connection talks
//! to its room directly through a [`RoomHandle`].

pub(crate) mod history;
pub(crate) mod namespace;
pub(crate) mod room;
pub(crate) mod shard;
mod users;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeSet;

use ractor::{ActorId, RpcReplyPort};
use serde_json::value::RawValue;

use crate::cluster::codec::Body;

use crate::delivery::{ConnId, Member};
use crate::ids::{NodeId, RoomName, UserId};
use crate::protocol::UserList;
use crate::rpc::CallError;
use crate::supervisor::Supervised;
pub(crate) use room::{Publication, RoomCell, RoomMsg};
pub(crate) use shard::{RoomCap, ShardCell, ShardMsg};
pub use history::Archive;
pub use namespace::{Namespace, Namespaces};

/// What a `join` with `since` asks for: every message of the room after
/// `seq`, if the room is still in `epoch` (when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub seq: u64,
    pub epoch: Option<Box<str>>,
}

/// A page of a room's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub epoch: String,
    /// The room's latest `seq`.
    pub seq: u64,
    /// The `message` frames, as JSON, oldest first.
    pub messages: Vec<Box<RawValue>>,
}

impl HistoryPage {
    /// A page of what Redis keeps of `room`'s history.
    pub(crate) fn of(room: &str, recorded: crate::cluster::Recorded) -> Self {
        let messages = recorded
            .entries
            .into_iter()
            .filter_map(|(seq, envelope)| message_frame(room, seq, envelope.body))
            .map(|frame| RawValue::from_string(frame.text().to_owned()).expect("a frame is JSON"))
            .collect();
        Self { epoch: recorded.epoch, seq: recorded.latest, messages }
    }
}

/// The `message` frame a numbered envelope of `room`'s history was
/// delivered as: the same bytes, `ts` included.
pub(crate) fn message_frame(room: &str, seq: u64, body: Body) -> Option<crate::protocol::Encoded> {
    let Body::Message { from, data, ts, .. } = body else { return None };
    let data = RawValue::from_string(data).ok()?;
    Some(crate::protocol::ServerFrame::Message { room, from: &from, data: &data, seq, ts }.encode())
}

/// A join refused because it would create a room past `limits.max_rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomsFull;

/// Why a join did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The room's shard did not answer.
    #[error(transparent)]
    Unavailable(#[from] CallError),
    /// The node holds `limits.max_rooms` rooms, and this one would be new.
    #[error("the node holds limits.max_rooms rooms")]
    RoomsFull,
}

/// Typed handle to the sharded room registry.
#[derive(Clone)]
pub struct RoomRegistry {
    shards: Arc<[Arc<ShardCell>]>,
    archive: Arc<Archive>,
    namespaces: Arc<Namespaces>,
    hasher: std::collections::hash_map::RandomState,
}

/// A joined room, as its members hold it.
#[derive(Clone)]
pub struct RoomHandle {
    room: Arc<RoomCell>,
}

impl RoomRegistry {
    pub fn new(shards: Vec<Arc<ShardCell>>, archive: Arc<Archive>, namespaces: Arc<Namespaces>) -> Self {
        Self { shards: shards.into(), archive, namespaces, hasher: Default::default() }
    }

    /// The node's namespaces.
    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    /// Every room's history on this node.
    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    fn shard(&self, room: &str) -> &Arc<ShardCell> {
        &self.shards[(self.hasher.hash_one(room) % self.shards.len() as u64) as usize]
    }

    /// Asks the shard of `room` and waits for the answer (see
    /// [`crate::supervisor::ask`]).
    fn ask<T: Send + 'static>(
        &self,
        room: &str,
        build: impl FnOnce(RpcReplyPort<T>) -> ShardMsg,
    ) -> impl Future<Output = Result<T, CallError>> + 'static {
        crate::supervisor::ask(self.shard(room).mailbox(), build)
    }

    /// Tells every shard.
    fn each_shard(&self, msg: impl Fn() -> ShardMsg) {
        for shard in self.shards.iter() {
            shard.mailbox().send(msg());
        }
    }

    /// Adds `member` to `room`, creating the room if needed (and allowed).
    /// The room writes the member's `joined` itself (echoing `id`), then,
    /// for a join with `since`, the messages it missed, before anything
    /// else of the room. Returns the room and the users now in it (the new
    /// member included; empty for a member whose transport writes no
    /// `joined`).
    pub fn join(
        &self,
        room: RoomName,
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Since>,
    ) -> impl Future<Output = Result<(RoomHandle, UserList), JoinError>> + 'static {
        let join = self.join_since(room, member, id, since);
        async move { join.await.map(|(handle, users, _)| (handle, users)) }
    }

    /// [`Self::join`], also telling, for a join with `since`, whether the
    /// messages after it followed (`Some(true)`) or could not (`Some(false)`).
    pub fn join_since(
        &self,
        room: RoomName,
        member: Member,
        id: Option<Box<RawValue>>,
        since: Option<Since>,
    ) -> impl Future<Output = Result<(RoomHandle, UserList, Option<bool>), JoinError>> + 'static {
        let reply = self.ask(&room.clone(), |reply| ShardMsg::Join { room, member, id, since, reply });
        async move {
            let reply = reply.await?.map_err(|RoomsFull| JoinError::RoomsFull)?;
            Ok((RoomHandle { room: reply.room }, reply.users, reply.recovered))
        }
    }

    /// The users of `room` (on every node, with clustering) as the room
    /// lists them, if it is alive on this node: shared with every other
    /// ask until its member set changes.
    pub fn presence(&self, room: RoomName) -> impl Future<Output = Option<UserList>> + 'static {
        let reply = self.ask(&room.clone(), |reply| ShardMsg::Presence { room, reply });
        async move { reply.await.ok().flatten() }
    }

    /// Removes connection `conn` from `room`; a no-op if it is not a member.
    pub fn leave(&self, room: RoomName, conn: ConnId) {
        self.shard(&room).mailbox().send(ShardMsg::Leave { room, conn });
    }

    /// Publishes `data` to `room` as `from`, on behalf of the server API, and
    /// returns its `seq`. Shares the room's numbering and order with the
    /// members' publishes, and advances `seq` even when the room has no members.
    pub fn publish_from_server(
        &self,
        room: RoomName,
        from: UserId,
        data: Box<RawValue>,
    ) -> impl Future<Output = Result<u64, CallError>> + 'static {
        let at = Instant::now();
        self.ask(&room.clone(), move |reply| ShardMsg::Publish { room, from, data, reply, at })
    }

    /// The last `seq` given out in `room` (0 when none).
    pub fn last_seq(&self, room: RoomName) -> impl Future<Output = Result<u64, CallError>> + 'static {
        self.ask(&room.clone(), |reply| ShardMsg::LastSeq { room, reply })
    }

    /// Up to `limit` messages of `room`'s history on this node after
    /// `since`, oldest first (single node: with clustering, history is
    /// read from the cluster).
    pub fn history(
        &self,
        room: RoomName,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, CallError>> + 'static {
        let epoch = self.archive.epoch().to_string();
        let page = self.ask(&room.clone(), move |reply| ShardMsg::History { room, since, limit, reply });
        async move {
            let page = page.await?;
            let messages = page
                .frames
                .iter()
                .map(|frame| RawValue::from_string(frame.text().to_owned()).expect("a frame is JSON"))
                .collect();
            Ok(HistoryPage { epoch, seq: page.latest, messages })
        }
    }

    /// Hands an envelope from the cluster to its room, if the room is
    /// alive on this node (it is subscribed to the channel only then).
    pub fn relayed(&self, seq: Option<u64>, origin: NodeId, body: Body) {
        let room = match &body {
            Body::Message { room, .. } | Body::Presence { room, .. } | Body::Typing { room, .. } => room,
            Body::Direct { .. } | Body::Broadcast { .. } => return,
        };
        let room = room.clone();
        self.shard(&room).mailbox().send(ShardMsg::Relayed { room, seq, origin, body });
    }

    /// The rooms alive on this node (those with members here); those of a
    /// shard that does not answer are missing.
    pub async fn live_rooms(&self) -> Vec<RoomName> {
        let asked: Vec<_> = self
            .shards
            .iter()
            .map(|shard| crate::supervisor::ask(shard.mailbox(), |reply| ShardMsg::LiveRooms { reply }))
            .collect();
        let mut rooms = Vec::new();
        for answer in asked {
            rooms.extend(answer.await.unwrap_or_default());
        }
        rooms
    }

    /// Has every live room re-subscribe and rewrite its cluster entries
    /// (the backplane is back after an outage).
    pub fn resync_all(&self) {
        self.each_shard(|| ShardMsg::Resync);
    }

    /// Tells every live room that `nodes` died.
    pub fn nodes_gone(&self, nodes: Arc<BTreeSet<NodeId>>) {
        self.each_shard(|| ShardMsg::NodesGone(nodes.clone()));
    }

    /// The life `room` is in, if the room is alive on this node: it
    /// changes when the room restarts.
    pub async fn room_life(&self, room: &str) -> Option<u32> {
        let room = RoomName::from(room);
        self.ask(&room.clone(), |reply| ShardMsg::RoomLife { room, reply }).await.ok().flatten()
    }

    /// The registry shard actor that owns `room` now.
    pub fn shard_actor(&self, room: &str) -> Option<ActorId> {
        self.shard(room).mailbox().actor()
    }

    /// Makes `room` panic when it reaches this message (fault injection);
    /// returns the life it is in, or `None` when the room is not alive on
    /// this node.
    pub async fn crash_room(&self, room: &str) -> Option<u32> {
        let room = RoomName::from(room);
        self.ask(&room.clone(), |reply| ShardMsg::CrashRoom { room, reply }).await.ok().flatten()
    }

    /// Has `room` stop answering for `time` (fault injection): false when
    /// the room is not alive on this node.
    pub async fn stall_room(&self, room: &str, time: std::time::Duration) -> bool {
        let room = RoomName::from(room);
        self.ask(&room.clone(), |reply| ShardMsg::StallRoom { room, time, reply }).await.unwrap_or(false)
    }

    /// Makes the registry shard that owns `room` panic (fault injection).
    pub fn crash_shard(&self, room: &str) -> Option<ActorId> {
        let shard = self.shard(room);
        let actor = shard.mailbox().actor()?;
        shard.mailbox().send(ShardMsg::Crash);
        Some(actor)
    }
}

impl RoomHandle {
    /// Whether the room's namespace lets clients publish and send `typing`.
    pub fn client_publish(&self) -> bool {
        self.room.client_publish
    }

    /// Publishes to the room; the room sends the `ack` when `id` is set.
    pub fn publish(&self, conn: ConnId, user: UserId, data: &RawValue, echo: bool, id: Option<&RawValue>) {
        let (data, id, at) = (data.to_owned(), id.map(ToOwned::to_owned), Instant::now());
        let publication = Publication { conn, user, data, echo, id, at };
        self.room.send(RoomMsg::Publish(publication));
    }

    /// Tells the other members that `user` is (or stopped) typing.
    pub fn typing(&self, conn: ConnId, user: UserId, typing: bool) {
        self.room.send(RoomMsg::Typing { conn, user, typing });
    }
}
