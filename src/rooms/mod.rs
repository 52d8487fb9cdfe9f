//! Rooms: a registry split into shards by the hash of the room name, each
//! shard owning its rooms as child actors.
//!
//! - [`shard`]: the registry shard actor (creates, retires and remembers rooms).
//! - [`room`]: the room actor (members, fan-out, `seq`).
//!
//! [`RoomRegistry`] is the handle connections use. Joins on rooms in different
//! shards never queue behind each other, and after a join a connection talks
//! to its room directly through a [`RoomHandle`].

pub mod room;
pub mod shard;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;

use ractor::ActorRef;
use serde_json::value::RawValue;

use crate::connection::{ConnId, Member};
use crate::rpc::{self, CallError};
pub use room::{Publication, RoomMsg};
pub use shard::ShardMsg;

/// Typed handle to the sharded room registry.
#[derive(Clone)]
pub struct RoomRegistry {
    shards: Arc<[ActorRef<ShardMsg>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// A joined room, as its members hold it.
#[derive(Clone)]
pub struct RoomHandle {
    actor: ActorRef<RoomMsg>,
}

impl RoomRegistry {
    pub fn new(shards: Vec<ActorRef<ShardMsg>>) -> Self {
        Self { shards: shards.into(), hasher: Default::default() }
    }

    fn shard(&self, room: &str) -> &ActorRef<ShardMsg> {
        &self.shards[(self.hasher.hash_one(room) % self.shards.len() as u64) as usize]
    }

    /// Adds `member` to `room`, creating the room if needed. Returns the room
    /// and the users now in it (the new member included).
    pub fn join(
        &self,
        room: Arc<str>,
        member: Member,
    ) -> impl Future<Output = Result<(RoomHandle, Vec<Arc<str>>), CallError>> + 'static {
        let shard = self.shard(&room).clone();
        async move {
            let reply = rpc::call(&shard, |reply| ShardMsg::Join { room, member, reply }).await?;
            Ok((RoomHandle { actor: reply.room }, reply.users))
        }
    }

    /// Removes connection `conn` from `room`; a no-op if it is not a member.
    pub fn leave(&self, room: Arc<str>, conn: ConnId) {
        let _ = self.shard(&room).cast(ShardMsg::Leave { room, conn });
    }

    /// Publishes `data` to `room` as `from`, on behalf of the server API, and
    /// returns its `seq`. Shares the room's numbering and order with the
    /// members' publishes, and advances `seq` even when the room has no members.
    pub fn publish_from_server(
        &self,
        room: Arc<str>,
        from: Arc<str>,
        data: Box<RawValue>,
    ) -> impl Future<Output = Result<u64, CallError>> + 'static {
        let shard = self.shard(&room).clone();
        async move { rpc::call(&shard, |reply| ShardMsg::Publish { room, from, data, reply }).await }
    }

    /// The last `seq` given out in `room` (0 when none).
    pub fn last_seq(&self, room: Arc<str>) -> impl Future<Output = Result<u64, CallError>> + 'static {
        let shard = self.shard(&room).clone();
        async move { rpc::call(&shard, |reply| ShardMsg::LastSeq { room, reply }).await }
    }
}

impl RoomHandle {
    /// Publishes to the room; the room sends the `ack` when `id` is set.
    pub fn publish(&self, conn: ConnId, user: Arc<str>, data: &RawValue, echo: bool, id: Option<&RawValue>) {
        let publication =
            Publication { conn, user, data: data.to_owned(), echo, id: id.map(ToOwned::to_owned) };
        let _ = self.actor.cast(RoomMsg::Publish(publication));
    }

    /// Tells the other members that `user` is (or stopped) typing.
    pub fn typing(&self, conn: ConnId, user: Arc<str>, typing: bool) {
        let _ = self.actor.cast(RoomMsg::Typing { conn, user, typing });
    }
}
