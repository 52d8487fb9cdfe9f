//! The transport-independent state of one connection: who it is, and which
//! rooms it is in. The connection core ([`super::core`]) owns a [`Session`] and drives it;
//! everything a room or presence must hear about when a connection changes
//! goes through here, so no transport can forget a cleanup.

use thin_vec::ThinVec;

use crate::auth::Identity;
use super::services::Services;
use crate::delivery::{ConnId, Member, Outbox};
use crate::ids::{RoomName, UserId};
use crate::rooms::RoomHandle;

/// One connection's identity and rooms.
pub(crate) struct Session {
    pub id: ConnId,
    identity: Option<Identity>,
    anonymous: bool,
    /// Joined rooms; `None` while the join is on its way. One pointer while
    /// empty (a `Vec` would be three).
    rooms: ThinVec<(RoomName, Option<RoomHandle>)>,
}

/// Why a join is refused before it reaches the room.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinRefusal {
    Forbidden,
    TooManyRooms,
}

impl Session {
    pub(crate) fn new(id: ConnId) -> Self {
        Self { id, identity: None, anonymous: false, rooms: ThinVec::new() }
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn user(&self) -> Option<&UserId> {
        self.identity.as_ref().map(|i| &i.user)
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Becomes `identity` and comes online. An anonymous session that
    /// authenticates leaves its rooms and presence as the anonymous user
    /// first: returns the rooms it left.
    pub(crate) fn authenticate(
        &mut self,
        services: &Services,
        identity: Identity,
        anonymous: bool,
        outbox: Outbox,
    ) -> Vec<RoomName> {
        let mut left = Vec::new();
        if self.identity.is_some() {
            left = self.rooms.iter().map(|(room, _)| room.clone()).collect();
            self.leave_everything(services);
        }
        let member = Member { conn: self.id, user: identity.user.clone(), outbox };
        services.presence.online(member);
        tracing::debug!(conn = %self.id, user = %identity.user, anonymous, "connection authenticated");
        self.identity = Some(identity);
        self.anonymous = anonymous;
        left
    }

    /// Replaces the claims of the current user (a token refresh), at once:
    /// leaves every room they no longer allow, and returns those rooms.
    pub(crate) fn refresh(&mut self, services: &Services, identity: Identity) -> Vec<RoomName> {
        let (conn, mut left) = (self.id, Vec::new());
        self.rooms.retain(|(room, _)| {
            let allowed = identity.may_join(room);
            if !allowed {
                services.rooms.leave(room.clone(), conn);
                left.push(room.clone());
            }
            allowed
        });
        self.identity = Some(identity);
        left
    }

    /// Checks a join against the identity's permissions and the room limit.
    pub(crate) fn check_join(&self, room: &str, max_rooms: usize) -> Result<(), JoinRefusal> {
        let Some(identity) = &self.identity else { return Err(JoinRefusal::Forbidden) };
        if !identity.may_join(room) {
            return Err(JoinRefusal::Forbidden);
        }
        if !self.is_in(room) && self.rooms.len() >= max_rooms {
            return Err(JoinRefusal::TooManyRooms);
        }
        Ok(())
    }

    fn is_in(&self, room: &str) -> bool {
        self.rooms.iter().any(|(r, _)| &**r == room)
    }

    /// Records a join on its way; returns whether the room is new to this session.
    pub(crate) fn joining(&mut self, room: &RoomName) -> bool {
        if self.is_in(room) {
            return false;
        }
        self.rooms.push((room.clone(), None));
        true
    }

    /// Records a completed join.
    pub(crate) fn joined(&mut self, room: &str, handle: RoomHandle) {
        if let Some(slot) = self.rooms.iter_mut().find(|(r, _)| &**r == room) {
            slot.1 = Some(handle);
        }
    }

    /// Forgets a room whose join was refused.
    pub(crate) fn join_refused(&mut self, room: &str) {
        self.rooms.retain(|(r, _)| &**r != room);
    }

    /// Forgets a room whose join went unanswered, and has the room drop
    /// the connection in case the join lands after all (a room that
    /// answers too late): the registry keeps their order, so the leave
    /// follows the join, and a client told to try again is in no room
    /// it does not know of.
    pub(crate) fn join_unanswered(&mut self, services: &Services, room: &RoomName) {
        self.join_refused(room);
        services.rooms.leave(room.clone(), self.id);
    }

    /// Whether the session is in `room` (its join answered).
    pub(crate) fn is_member(&self, room: &str) -> bool {
        self.room(room).is_some()
    }

    /// The handle of a joined room.
    pub(crate) fn room(&self, room: &str) -> Option<&RoomHandle> {
        self.rooms.iter().find(|(r, _)| &**r == room).and_then(|(_, h)| h.as_ref())
    }

    /// Leaves `room`; returns whether the session was in it.
    pub(crate) fn leave(&mut self, services: &Services, room: &str) -> bool {
        let Some(at) = self.rooms.iter().position(|(r, _)| &**r == room) else { return false };
        let (room, _) = self.rooms.swap_remove(at);
        services.rooms.leave(room, self.id);
        true
    }

    /// Leaves every room (pending joins included: the registry keeps their
    /// order) and goes offline. Called when the connection ends.
    pub(crate) fn leave_everything(&mut self, services: &Services) {
        for (room, _) in self.rooms.drain(..) {
            services.rooms.leave(room, self.id);
        }
        if let Some(identity) = self.identity.take() {
            services.presence.offline(identity.user, self.id);
        }
    }
}
