//! The room actor: one per room with members on this node.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::value::RawValue;

use super::shard::ShardMsg;
use crate::connection::{deliver, ConnId, Delivery, Member, Outbox};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::{now_ms, Encoded, ServerFrame};

/// A publish on its way to a room.
pub struct Publication {
    pub conn: ConnId,
    pub user: Arc<str>,
    pub data: Box<RawValue>,
    /// Whether the publishing connection receives its own message.
    pub echo: bool,
    /// The client frame's `id`; with one, the publisher gets an `ack` with the `seq`.
    pub id: Option<Box<RawValue>>,
}

/// What a join answers: the room to publish to, and the users now in it.
pub struct JoinReply {
    pub room: ActorRef<RoomMsg>,
    pub users: Vec<Arc<str>>,
}

/// Messages of a room. Joins and leaves arrive through the registry shard.
pub enum RoomMsg {
    Join { member: Member, reply: RpcReplyPort<JoinReply> },
    Leave { conn: ConnId },
    Publish(Publication),
    Typing { conn: ConnId, user: Arc<str>, typing: bool },
}

/// What a room needs from its shard to start.
pub struct RoomArgs {
    pub name: Arc<str>,
    pub seq: Arc<AtomicU64>,
    pub shard: ActorRef<ShardMsg>,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
}

/// The room actor.
pub struct Room;

/// A room's members and bookkeeping.
pub struct RoomState {
    name: Arc<str>,
    seq: Arc<AtomicU64>,
    shard: ActorRef<ShardMsg>,
    presence: Presence,
    metrics: Arc<Metrics>,
    members: HashMap<ConnId, (Arc<str>, Outbox)>,
    /// Connections per user in this room.
    users: HashMap<Arc<str>, u32>,
    /// Joins handled so far; the shard compares it with the joins it forwarded
    /// before it lets an empty room stop, so no join is ever lost to a stop.
    joins_seen: u64,
}

impl RoomState {
    fn users(&self) -> Vec<Arc<str>> {
        let mut users: Vec<_> = self.users.keys().cloned().collect();
        users.sort_unstable();
        users
    }

    /// Queues `frame` for every member but `except`; returns how many got it.
    fn fan_out(&mut self, frame: &Encoded, except: Option<ConnId>) {
        let mut gone = Vec::new();
        for (conn, (_, outbox)) in &self.members {
            if Some(*conn) == except {
                continue;
            }
            match deliver(outbox, frame.clone()) {
                Delivery::Queued => {}
                Delivery::Full => self.metrics.deliveries_dropped.inc(),
                Delivery::Closed => gone.push(*conn),
            }
        }
        for conn in gone {
            self.remove(conn);
        }
    }

    fn join(&mut self, member: Member) {
        self.joins_seen += 1;
        if self.members.contains_key(&member.conn) {
            return;
        }
        self.members.insert(member.conn, (member.user.clone(), member.outbox));
        let count = self.users.entry(member.user.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.presence.room_joined(self.name.clone(), member.user.clone());
            let frame = ServerFrame::UserJoined { room: &self.name, user: &member.user }.encode();
            self.fan_out(&frame, Some(member.conn));
        }
    }

    fn remove(&mut self, conn: ConnId) {
        let Some((user, _)) = self.members.remove(&conn) else { return };
        let last = match self.users.get_mut(&user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => true,
        };
        if last {
            self.users.remove(&user);
            self.presence.room_left(self.name.clone(), user.clone());
            let frame = ServerFrame::UserLeft { room: &self.name, user: &user }.encode();
            self.fan_out(&frame, None);
        }
    }

    fn publish(&mut self, publication: Publication) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = ServerFrame::Message {
            room: &self.name,
            from: &publication.user,
            data: &publication.data,
            seq,
            ts: now_ms(),
        }
        .encode();
        if let (Some(id), Some((_, outbox))) = (&publication.id, self.members.get(&publication.conn)) {
            deliver(outbox, ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode());
        }
        let except = (!publication.echo).then_some(publication.conn);
        self.fan_out(&frame, except);
    }
}

impl Actor for Room {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(&self, _: ActorRef<RoomMsg>, args: RoomArgs) -> Result<RoomState, ActorProcessingErr> {
        args.metrics.rooms.inc();
        Ok(RoomState {
            name: args.name,
            seq: args.seq,
            shard: args.shard,
            presence: args.presence,
            metrics: args.metrics,
            members: HashMap::new(),
            users: HashMap::new(),
            joins_seen: 0,
        })
    }

    async fn post_stop(&self, _: ActorRef<RoomMsg>, state: &mut RoomState) -> Result<(), ActorProcessingErr> {
        state.metrics.rooms.dec();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Join { member, reply } => {
                state.join(member);
                let _ = reply.send(JoinReply { room: myself.clone(), users: state.users() });
            }
            RoomMsg::Leave { conn } => state.remove(conn),
            RoomMsg::Publish(publication) => state.publish(publication),
            RoomMsg::Typing { conn, user, typing } => {
                let frame = ServerFrame::Typing { room: &state.name, user: &user, typing }.encode();
                state.fan_out(&frame, Some(conn));
            }
        }
        if state.members.is_empty() {
            let empty =
                ShardMsg::Empty { room: state.name.clone(), actor: myself.get_id(), joins_seen: state.joins_seen };
            let _ = state.shard.cast(empty);
        }
        Ok(())
    }
}
