//! The presence registry actor: one per node.
//!
//! State is two maps: user → the connections that are online as that user
//! (their outboxes, for `direct`), and room → the users in it. Rooms keep
//! their own per-user connection counts and tell this actor only about a
//! user's first arrival and last departure, so its room sets hold users, not
//! connections.
//!
//! [`PresenceCell`] is the actor (see [`crate::supervisor`]): its queue and
//! its state outlive any one run, so after a restart every answer is as
//! complete as before it, and nobody is told they joined or left.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::RpcReplyPort;

use crate::cluster::Cluster;
use crate::delivery::{ConnId, Member, Outbox};
use crate::ids::{RoomName, UserId};
use crate::metrics::{ActorKind, Metrics};
use crate::protocol::Encoded;
use crate::supervisor::{Actor, Supervised, Failure, Mailbox};

/// Messages of the presence registry. Use [`super::Presence`] to send them.
pub(crate) enum PresenceMsg {
    Online(Member),
    Offline {
        user: UserId,
        conn: ConnId,
    },
    RoomJoined {
        room: RoomName,
        user: UserId,
    },
    RoomLeft {
        room: RoomName,
        user: UserId,
    },
    RoomUsers {
        room: RoomName,
        reply: RpcReplyPort<Vec<UserId>>,
    },
    Status {
        users: Vec<UserId>,
        reply: RpcReplyPort<BTreeMap<UserId, bool>>,
    },
    Direct {
        to: UserId,
        frame: Encoded,
    },
    Counts {
        reply: RpcReplyPort<Counts>,
    },
    /// The users with a connection on this node.
    LocalUsers {
        reply: RpcReplyPort<Vec<UserId>>,
    },
    /// Cluster: rewrite this node's online users in the directory and
    /// re-subscribe their channels (the backplane is back after an outage).
    Resync,
    /// Panics the actor (fault injection).
    Crash,
}

/// How much this node holds: the numbers of `GET /api/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Connections with a user (anonymous ones included), not those still waiting to authenticate.
    pub connections: usize,
    /// Rooms with at least one user.
    pub rooms: usize,
    /// Distinct users online.
    pub users: usize,
}

/// The presence registry actor: its queue and state, which outlive any one run.
pub struct PresenceCell {
    mailbox: Mailbox<PresenceMsg>,
    /// With clustering: users coming online here and going offline are
    /// told to the directory, and their channels subscribed.
    pub cluster: Cluster,
    state: Mutex<PresenceState>,
}

impl PresenceCell {
    pub fn new(metrics: Arc<Metrics>, cluster: Cluster) -> Self {
        let mailbox = Mailbox::counted(metrics.mailbox_backlog(ActorKind::Presence).clone());
        let state = PresenceState { metrics, cluster: cluster.clone(), online: HashMap::new(), rooms: HashMap::new() };
        Self { mailbox, cluster, state: Mutex::new(state) }
    }
}

/// Who is online and who is in which room.
struct PresenceState {
    metrics: Arc<Metrics>,
    cluster: Cluster,
    online: HashMap<UserId, Vec<(ConnId, Outbox)>>,
    rooms: HashMap<RoomName, HashSet<UserId>>,
}

impl PresenceState {
    /// Applies one message. `Crash` is the actor's to act on.
    fn apply(&mut self, msg: PresenceMsg) {
        match msg {
            PresenceMsg::Online(member) => self.online(member),
            PresenceMsg::Offline { user, conn } => self.offline(&user, conn),
            PresenceMsg::RoomJoined { room, user } => self.room_joined(room, user),
            PresenceMsg::RoomLeft { room, user } => self.room_left(&room, &user),
            PresenceMsg::RoomUsers { room, reply } => {
                let _ = reply.send(self.room_users(&room));
            }
            PresenceMsg::Status { users, reply } => {
                let _ = reply.send(self.status(users));
            }
            PresenceMsg::Direct { to, frame } => self.direct(&to, frame),
            PresenceMsg::Counts { reply } => {
                let _ = reply.send(self.counts());
            }
            PresenceMsg::LocalUsers { reply } => {
                let _ = reply.send(self.online.keys().cloned().collect());
            }
            PresenceMsg::Resync => self.resync(),
            PresenceMsg::Crash => {}
        }
    }

    fn online(&mut self, member: Member) {
        let conns = self.online.entry(member.user.clone()).or_default();
        if conns.is_empty() {
            self.cluster.user_online(&member.user);
        }
        conns.push((member.conn, member.outbox));
        self.metrics.users_online.set(self.online.len() as i64);
    }

    fn offline(&mut self, user: &str, conn: ConnId) {
        let Some(conns) = self.online.get_mut(user) else {
            return;
        };
        conns.retain(|(c, _)| *c != conn);
        if conns.is_empty() {
            if let Some((user, _)) = self.online.remove_entry(user) {
                self.cluster.user_offline(&user);
            }
            crate::memory::shrink_sparse(&mut self.online);
            self.metrics.users_online.set(self.online.len() as i64);
        }
    }

    fn resync(&self) {
        self.cluster.users_online(self.online.keys().cloned());
    }

    fn room_joined(&mut self, room: RoomName, user: UserId) {
        self.rooms.entry(room).or_default().insert(user);
    }

    fn room_left(&mut self, room: &str, user: &str) {
        if let Some(users) = self.rooms.get_mut(room) {
            users.remove(user);
            if users.is_empty() {
                self.rooms.remove(room);
                crate::memory::shrink_sparse(&mut self.rooms);
            }
        }
    }

    fn room_users(&self, room: &str) -> Vec<UserId> {
        let mut users: Vec<_> = self.rooms.get(room).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        users.sort_unstable();
        users
    }

    fn status(&self, users: Vec<UserId>) -> BTreeMap<UserId, bool> {
        users
            .into_iter()
            .map(|u| {
                let online = self.online.contains_key(&u);
                (u, online)
            })
            .collect()
    }

    fn counts(&self) -> Counts {
        Counts {
            connections: self.online.values().map(Vec::len).sum(),
            rooms: self.rooms.len(),
            users: self.online.len(),
        }
    }

    fn direct(&self, to: &str, frame: Encoded) {
        for (_, outbox) in self.online.get(to).into_iter().flatten() {
            outbox.deliver(&frame, &self.metrics);
        }
    }
}

impl Actor for Arc<PresenceCell> {
    type Msg = PresenceMsg;
    const KIND: ActorKind = ActorKind::Presence;

    fn handle(&mut self, msg: PresenceMsg) -> Result<(), Failure> {
        if let PresenceMsg::Crash = msg {
            panic!("fault injection: presence registry");
        }
        self.state.lock().apply(msg);
        Ok(())
    }
}

impl Supervised for Arc<PresenceCell> {
    fn mailbox(&self) -> &Mailbox<PresenceMsg> {
        &self.mailbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::Presence;

    async fn spawn() -> (Presence, ractor::ActorRef<crate::supervisor::Wake>) {
        let cell = Arc::new(PresenceCell::new(Arc::new(Metrics::new()), Cluster::single()));
        let runner = crate::supervisor::Runner::<Arc<PresenceCell>>::default();
        let (actor, _) = ractor::Actor::spawn(None, runner, cell.clone()).await.unwrap();
        (Presence::new(cell), actor)
    }

    fn strs(v: Vec<UserId>) -> Vec<String> {
        v.into_iter().map(|s| s.to_string()).collect()
    }

    #[actix_web::test]
    async fn rooms_hold_users_once_and_sorted() {
        let (p, actor) = spawn().await;
        p.room_joined("r".into(), "bob".into());
        p.room_joined("r".into(), "alice".into());
        p.room_joined("r".into(), "alice".into());
        p.room_joined("s".into(), "carol".into());
        assert_eq!(strs(p.room_users("r".into()).await.unwrap()), ["alice", "bob"]);
        p.room_left("r".into(), "alice".into());
        assert_eq!(strs(p.room_users("r".into()).await.unwrap()), ["bob"]);
        p.room_left("r".into(), "bob".into());
        assert!(p.room_users("r".into()).await.unwrap().is_empty());
        assert_eq!(strs(p.room_users("s".into()).await.unwrap()), ["carol"]);
        actor.stop(None);
    }

    #[actix_web::test]
    async fn status_follows_the_last_connection() {
        let (p, actor) = spawn().await;
        let (outbox, _) = crate::delivery::testing::collector(16);
        p.online(Member { conn: ConnId(1), user: "alice".into(), outbox: outbox.clone() });
        p.online(Member { conn: ConnId(2), user: "alice".into(), outbox });
        let ask = || p.status(vec!["alice".into(), "bob".into()]);
        let both = ask().await.unwrap();
        assert_eq!((both["alice"], both["bob"]), (true, false));
        p.offline("alice".into(), ConnId(1));
        assert!(ask().await.unwrap()["alice"]);
        p.offline("alice".into(), ConnId(2));
        assert!(!ask().await.unwrap()["alice"]);
        actor.stop(None);
    }

    #[actix_web::test]
    async fn direct_reaches_every_connection_of_the_user_only() {
        let (p, actor) = spawn().await;
        let (tab1, frames1) = crate::delivery::testing::collector(16);
        let (tab2, frames2) = crate::delivery::testing::collector(16);
        let (other, other_frames) = crate::delivery::testing::collector(16);
        p.online(Member { conn: ConnId(1), user: "alice".into(), outbox: tab1 });
        p.online(Member { conn: ConnId(2), user: "alice".into(), outbox: tab2 });
        p.online(Member { conn: ConnId(3), user: "bob".into(), outbox: other });
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        let frame = crate::protocol::ServerFrame::Direct { from: "bob", data: &data, ts: 1 }.encode();
        p.direct("alice".into(), frame.clone());
        p.direct("nobody".into(), frame);
        // A query is answered after the casts before it: deliveries are queued by then.
        p.status(vec![]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(frames1.lock().len(), 1);
        assert_eq!(frames2.lock().len(), 1);
        assert!(other_frames.lock().is_empty());
        actor.stop(None);
    }
}
