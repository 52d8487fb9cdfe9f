//! Presence: who is online (with which connections), and which users are in
//! which room, counted as users rather than connections.
//!
//! [`registry`] holds the actor; [`Presence`] is the handle everything else
//! uses. Rooms report a user's first arrival and last departure, connections
//! report coming online and going offline; queries read the same state, so a
//! `presence` answer always agrees with the `user_joined` / `user_left`
//! frames sent before it.

pub mod registry;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use ractor::ActorRef;

use crate::connection::{ConnId, Member};
use crate::protocol::Encoded;
use crate::rpc::{self, CallError};
pub use registry::{Counts, PresenceMsg, PresenceRegistry};

/// Typed handle to the presence registry.
#[derive(Clone)]
pub struct Presence {
    actor: ActorRef<PresenceMsg>,
}

impl Presence {
    pub fn new(actor: ActorRef<PresenceMsg>) -> Self {
        Self { actor }
    }

    fn cast(&self, msg: PresenceMsg) {
        if let Err(e) = self.actor.cast(msg) {
            tracing::warn!(error = %e, "presence registry unavailable");
        }
    }

    /// A connection of `member.user` is now online and can receive `direct` frames.
    pub fn online(&self, member: Member) {
        self.cast(PresenceMsg::Online(member));
    }

    /// A connection went away.
    pub fn offline(&self, user: Arc<str>, conn: ConnId) {
        self.cast(PresenceMsg::Offline { user, conn });
    }

    /// `user` has its first connection in `room`.
    pub fn room_joined(&self, room: Arc<str>, user: Arc<str>) {
        self.cast(PresenceMsg::RoomJoined { room, user });
    }

    /// `user` has no connection left in `room`.
    pub fn room_left(&self, room: Arc<str>, user: Arc<str>) {
        self.cast(PresenceMsg::RoomLeft { room, user });
    }

    /// Queues `frame` for every connection of `to`.
    pub fn direct(&self, to: Arc<str>, frame: Encoded) {
        self.cast(PresenceMsg::Direct { to, frame });
    }

    /// The users in `room`, each once, sorted.
    pub fn room_users(&self, room: Arc<str>) -> impl Future<Output = Result<Vec<Arc<str>>, CallError>> + 'static {
        let actor = self.actor.clone();
        async move { rpc::call(&actor, |reply| PresenceMsg::RoomUsers { room, reply }).await }
    }

    /// The connections, rooms and users this registry holds.
    pub fn counts(&self) -> impl Future<Output = Result<Counts, CallError>> + 'static {
        let actor = self.actor.clone();
        async move { rpc::call(&actor, |reply| PresenceMsg::Counts { reply }).await }
    }

    /// Whether each of `users` is online.
    pub fn status(&self, users: Vec<String>) -> impl Future<Output = Result<BTreeMap<String, bool>, CallError>> + 'static {
        let actor = self.actor.clone();
        async move { rpc::call(&actor, |reply| PresenceMsg::Status { users, reply }).await }
    }
}
