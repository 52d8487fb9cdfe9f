//! Presence: who is online (with which connections), and which users are in
//! which room, counted as users rather than connections.
//!
//! [`registry`] holds the actor ([`PresenceCell`]); [`Presence`] is the
//! handle everything else uses. Rooms report a user's first arrival and last departure, connections
//! report coming online and going offline; queries read the same state, so a
//! `presence` answer always agrees with the `user_joined` / `user_left`
//! frames sent before it.

pub(crate) mod registry;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use ractor::{ActorId, RpcReplyPort};

use crate::delivery::{ConnId, Member};
use crate::ids::{RoomName, UserId};
use crate::supervisor::Supervised;
use crate::protocol::Encoded;
use crate::rpc::CallError;
pub(crate) use registry::{Counts, PresenceCell, PresenceMsg};

/// Typed handle to the presence registry. Messages go to the registry's
/// mailbox, which outlives its actor: nothing sent while the actor is being
/// restarted is lost.
#[derive(Clone)]
pub struct Presence {
    cell: Arc<PresenceCell>,
}

impl Presence {
    pub fn new(cell: Arc<PresenceCell>) -> Self {
        Self { cell }
    }

    fn cast(&self, msg: PresenceMsg) {
        self.cell.mailbox().send(msg);
    }

    /// Asks the registry and waits for the answer (see [`crate::supervisor::ask`]).
    fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> PresenceMsg,
    ) -> impl Future<Output = Result<T, CallError>> + 'static {
        crate::supervisor::ask(self.cell.mailbox(), build)
    }

    /// A connection of `member.user` is now online and can receive `direct` frames.
    pub fn online(&self, member: Member) {
        self.cast(PresenceMsg::Online(member));
    }

    /// A connection went away.
    pub fn offline(&self, user: UserId, conn: ConnId) {
        self.cast(PresenceMsg::Offline { user, conn });
    }

    /// `user` has its first connection in `room`.
    pub fn room_joined(&self, room: RoomName, user: UserId) {
        self.cast(PresenceMsg::RoomJoined { room, user });
    }

    /// `user` has no connection left in `room`.
    pub fn room_left(&self, room: RoomName, user: UserId) {
        self.cast(PresenceMsg::RoomLeft { room, user });
    }

    /// Queues `frame` for every connection of `to`.
    pub fn direct(&self, to: UserId, frame: Encoded) {
        self.cast(PresenceMsg::Direct { to, frame });
    }

    /// The users in `room`, each once, sorted: on every node with
    /// clustering (this node's own view while the backplane is away).
    pub fn room_users(&self, room: RoomName) -> impl Future<Output = Result<Vec<UserId>, CallError>> + 'static {
        let local = self.clone();
        cluster_else(self.cell.cluster.room_users(&room), move || local.ask(|reply| PresenceMsg::RoomUsers { room, reply }))
    }

    /// How many distinct users `room` has: on every node with clustering
    /// (counted where the directory is, not listed here), this node's own
    /// count while the backplane is away.
    pub fn room_count(&self, room: RoomName) -> impl Future<Output = Result<usize, CallError>> + 'static {
        let local = self.clone();
        cluster_else(self.cell.cluster.room_count(&room), move || async move {
            local.ask(|reply| PresenceMsg::RoomUsers { room, reply }).await.map(|users| users.len())
        })
    }

    /// The connections, rooms and users this registry holds.
    pub fn counts(&self) -> impl Future<Output = Result<Counts, CallError>> + 'static {
        self.ask(|reply| PresenceMsg::Counts { reply })
    }

    /// Whether each of `users` is online: on any node with clustering
    /// (on this one while the backplane is away).
    pub fn status(
        &self,
        users: Vec<UserId>,
    ) -> impl Future<Output = Result<BTreeMap<UserId, bool>, CallError>> + 'static {
        let cluster = self.cell.cluster.online(users.clone()).map(|query| {
            let asked = users.clone();
            async move { query.await.map(|online| asked.into_iter().zip(online).collect()) }
        });
        let local = self.clone();
        cluster_else(cluster, move || local.ask(|reply| PresenceMsg::Status { users, reply }))
    }

    /// The users with a connection on this node now.
    pub fn local_users(&self) -> impl Future<Output = Result<Vec<UserId>, CallError>> + 'static {
        self.ask(|reply| PresenceMsg::LocalUsers { reply })
    }

    /// Has the registry rewrite its cluster entries (see [`PresenceMsg::Resync`]).
    pub fn resync(&self) {
        self.cast(PresenceMsg::Resync);
    }

    /// The registry actor now.
    pub fn actor(&self) -> Option<ActorId> {
        self.cell.mailbox().actor()
    }

    /// Makes the registry actor panic when it reaches this message (fault
    /// injection); returns the actor now running.
    pub fn crash(&self) -> Option<ActorId> {
        let actor = self.actor()?;
        self.cast(PresenceMsg::Crash);
        Some(actor)
    }
}

/// The cluster's answer while it can give one (`cluster` is `None` on a
/// single node and while the backplane is away), else this node's own,
/// asked only then.
async fn cluster_else<T, E, L>(
    cluster: Option<impl Future<Output = Result<T, E>>>,
    local: impl FnOnce() -> L,
) -> Result<T, CallError>
where
    L: Future<Output = Result<T, CallError>>,
{
    if let Some(query) = cluster {
        if let Ok(answer) = query.await {
            return Ok(answer);
        }
    }
    local().await
}
