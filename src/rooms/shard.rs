//! A room registry shard: owns the rooms whose names hash to it.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::value::RawValue;

use super::room::{JoinReply, Room, RoomArgs, RoomMsg};
use crate::connection::{ConnId, Member};
use crate::metrics::Metrics;
use crate::presence::Presence;

/// Messages of a registry shard. Use [`super::RoomRegistry`] to send them.
pub enum ShardMsg {
    Join { room: Arc<str>, member: Member, reply: RpcReplyPort<JoinReply> },
    Leave { room: Arc<str>, conn: ConnId },
    /// Sent by a room after any message that leaves it without members.
    Empty { room: Arc<str>, actor: ActorId, seen: u64 },
    /// A publish from the server API; the reply is its `seq`.
    Publish { room: Arc<str>, from: Arc<str>, data: Box<RawValue>, reply: RpcReplyPort<u64> },
    /// The last `seq` given out in a room (0 when none).
    LastSeq { room: Arc<str>, reply: RpcReplyPort<u64> },
}

/// A registry shard actor.
pub struct Shard;

/// What a shard needs to start rooms.
pub struct ShardArgs {
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
}

struct Slot {
    seq: Arc<AtomicU64>,
    room: Option<ActorRef<RoomMsg>>,
    /// Joins and server publishes forwarded to the current room actor.
    forwarded: u64,
}

impl Slot {
    fn new() -> Self {
        Self { seq: Arc::new(AtomicU64::new(0)), room: None, forwarded: 0 }
    }
}

/// The rooms of one shard.
pub struct ShardState {
    presence: Presence,
    metrics: Arc<Metrics>,
    slots: HashMap<Arc<str>, Slot>,
}

impl ShardState {
    async fn join(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        name: Arc<str>,
        member: Member,
        reply: RpcReplyPort<JoinReply>,
    ) -> Result<(), ActorProcessingErr> {
        let slot = self.slots.entry(name.clone()).or_insert_with(Slot::new);
        let room = match &slot.room {
            Some(room) => room.clone(),
            None => {
                let args = RoomArgs {
                    name,
                    seq: slot.seq.clone(),
                    shard: myself.clone(),
                    presence: self.presence.clone(),
                    metrics: self.metrics.clone(),
                };
                let room = match Actor::spawn_linked(None, Room, args, myself.get_cell()).await {
                    Ok((room, _)) => room,
                    Err(error) => {
                        // The dropped reply port fails this one join; the shard carries on.
                        tracing::error!(%error, "could not start a room");
                        return Ok(());
                    }
                };
                slot.room = Some(room.clone());
                slot.forwarded = 0;
                room
            }
        };
        slot.forwarded += 1;
        // If the room died after we looked, the reply port drops and the
        // caller sees the join fail rather than wait.
        let _ = room.cast(RoomMsg::Join { member, reply });
        Ok(())
    }

    fn leave(&self, name: &str, conn: ConnId) {
        if let Some(room) = self.slots.get(name).and_then(|s| s.room.as_ref()) {
            let _ = room.cast(RoomMsg::Leave { conn });
        }
    }

    /// Gives a server publish its `seq`: through the room actor when there is
    /// one, so it is ordered with the members' own publishes; here otherwise.
    fn publish(&mut self, name: Arc<str>, from: Arc<str>, data: Box<RawValue>, reply: RpcReplyPort<u64>) {
        let slot = self.slots.entry(name).or_insert_with(Slot::new);
        match &slot.room {
            Some(room) => {
                slot.forwarded += 1;
                let _ = room.cast(RoomMsg::ServerPublish { from, data, reply });
            }
            None => {
                let _ = reply.send(slot.seq.fetch_add(1, Ordering::Relaxed) + 1);
            }
        }
    }

    fn empty(&mut self, name: &str, actor: ActorId, seen: u64) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let current = slot.room.as_ref().is_some_and(|r| r.get_id() == actor);
        if !current || slot.forwarded != seen {
            return;
        }
        if let Some(room) = slot.room.take() {
            room.stop(None);
        }
        self.forget_if_unused(name);
    }

    /// Drops the slot of a room with no actor and no `seq` to remember.
    fn forget_if_unused(&mut self, name: &str) {
        if self.slots.get(name).is_some_and(|s| s.room.is_none() && s.seq.load(Ordering::Relaxed) == 0) {
            self.slots.remove(name);
        }
    }

    /// A room actor ended without being retired (it failed): forget it, so
    /// the next join starts a fresh one.
    fn room_ended(&mut self, actor: ActorId) {
        let name = self
            .slots
            .iter()
            .find(|(_, s)| s.room.as_ref().is_some_and(|r| r.get_id() == actor))
            .map(|(name, _)| name.clone());
        if let Some(name) = name {
            if let Some(slot) = self.slots.get_mut(&name) {
                slot.room = None;
            }
            self.forget_if_unused(&name);
        }
    }
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(&self, _: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState { presence: args.presence, metrics: args.metrics, slots: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Join { room, member, reply } => state.join(&myself, room, member, reply).await?,
            ShardMsg::Leave { room, conn } => state.leave(&room, conn),
            ShardMsg::Empty { room, actor, seen } => state.empty(&room, actor, seen),
            ShardMsg::Publish { room, from, data, reply } => state.publish(room, from, data, reply),
            ShardMsg::LastSeq { room, reply } => {
                let seq = state.slots.get(&room).map_or(0, |s| s.seq.load(Ordering::Relaxed));
                let _ = reply.send(seq);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ShardMsg>,
        event: SupervisionEvent,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = %cell.get_id(), %error, "room failed");
                state.room_ended(cell.get_id());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => state.room_ended(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}
