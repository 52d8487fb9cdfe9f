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
//!
//! A room's members and its queue of messages live in its [`RoomCell`],
//! which its shard keeps, not in the actor: the actor is the one writer that
//! applies the queued messages to the room in order. When it panics, the
//! shard starts a new actor over the same cell (members, per-user counts and
//! `seq` untouched), which carries on with the messages that waited.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::value::RawValue;

use super::shard::ShardMsg;
use crate::connection::{ConnId, Delivery, Member, Outbox};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::{now_ms, Encoded, ServerFrame, ServerKind};
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
    ServerPublish { from: Arc<str>, data: Box<RawValue>, reply: RpcReplyPort<u64> },
    Typing { conn: ConnId, user: Arc<str>, typing: bool },
    /// Panics the actor (fault injection).
    Crash,
}

/// The room actor.
pub struct Room;

/// A room: its queue and its state, which outlive any one actor.
pub struct RoomCell {
    pub name: Arc<str>,
    pub mailbox: Mailbox<RoomMsg>,
    state: Mutex<RoomState>,
}

/// A room's members and bookkeeping.
pub struct RoomState {
    name: Arc<str>,
    seq: Arc<AtomicU64>,
    /// The shard's mailbox, told when the room is left empty.
    shard: Arc<Mailbox<ShardMsg>>,
    presence: Presence,
    metrics: Arc<Metrics>,
    members: HashMap<ConnId, (Arc<str>, Outbox)>,
    /// Connections per user in this room, kept sorted: a join in a big room
    /// lists them without sorting.
    users: BTreeMap<Arc<str>, u32>,
    /// Joins and server publishes handled so far; the shard compares it with
    /// what it forwarded before it lets an empty room stop, so nothing the
    /// shard sent is ever lost to a stop.
    seen: u64,
}

impl RoomCell {
    pub fn new(
        name: Arc<str>,
        seq: Arc<AtomicU64>,
        shard: Arc<Mailbox<ShardMsg>>,
        presence: Presence,
        metrics: Arc<Metrics>,
    ) -> Self {
        let state = RoomState {
            name: name.clone(),
            seq,
            shard,
            presence,
            metrics,
            members: HashMap::new(),
            users: BTreeMap::new(),
            seen: 0,
        };
        Self { name, mailbox: Mailbox::default(), state: Mutex::new(state) }
    }

    /// Queues `msg` for the room, whichever actor runs it.
    pub fn send(&self, msg: RoomMsg) {
        self.mailbox.send(msg);
    }

    /// Applies one message to the room's state; `Crash` is the actor's to act on.
    fn apply(self: &Arc<Self>, msg: RoomMsg) {
        let mut state = self.state.lock();
        // Counted before anything else, so a message the room fails on still
        // counts as seen and the shard's retire check stays in step.
        if matches!(msg, RoomMsg::Join { .. } | RoomMsg::ServerPublish { .. }) {
            state.seen += 1;
        }
        match msg {
            RoomMsg::Join { member, reply } => {
                // Only a transport that writes `joined` needs the user list.
                let users_wanted = member.outbox.carries(ServerKind::Joined);
                state.join(member);
                let users = if users_wanted { state.users() } else { Vec::new() };
                let _ = reply.send(JoinReply { room: self.clone(), users });
            }
            RoomMsg::Leave { conn } => state.remove(conn),
            RoomMsg::Publish(publication) => state.publish(publication),
            RoomMsg::ServerPublish { from, data, reply } => {
                let _ = reply.send(state.server_publish(&from, &data));
            }
            RoomMsg::Typing { conn, user, typing } => {
                let frame = ServerFrame::Typing { room: &state.name, user: &user, typing }.encode();
                state.fan_out(&frame, Some(conn));
            }
            RoomMsg::Crash => {}
        }
        if state.members.is_empty() {
            let empty = ShardMsg::Empty { room: self.clone(), seen: state.seen };
            state.shard.send(empty);
        }
    }

    /// Members now in the room.
    pub fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }
}

impl RoomState {
    /// The users in the room, sorted.
    fn users(&self) -> Vec<Arc<str>> {
        self.users.keys().cloned().collect()
    }
    /// Queues `frame` for every member but `except`. Members that cannot take
    /// it (slow consumers, closed connections) leave the room.
    fn fan_out(&mut self, frame: &Encoded, except: Option<ConnId>) {
        let mut gone = Vec::new();
        for (conn, (_, outbox)) in &self.members {
            if Some(*conn) == except {
                continue;
            }
            if outbox.deliver(frame.clone(), &self.metrics) != Delivery::Queued {
                gone.push(*conn);
            }
        }
        for conn in gone {
            self.remove(conn);
        }
    }

    fn join(&mut self, member: Member) {
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

    /// Takes the next `seq` and encodes the `message` frame that carries it.
    fn message(&self, from: &str, data: &RawValue) -> (u64, Encoded) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        (seq, ServerFrame::Message { room: &self.name, from, data, seq, ts: now_ms() }.encode())
    }

    fn publish(&mut self, publication: Publication) {
        let (seq, frame) = self.message(&publication.user, &publication.data);
        if let (Some(id), Some((_, outbox))) = (&publication.id, self.members.get(&publication.conn)) {
            outbox.deliver(ServerFrame::Ack { seq: Some(seq), id: Some(id) }.encode(), &self.metrics);
        }
        let except = (!publication.echo).then_some(publication.conn);
        self.fan_out(&frame, except);
    }

    fn server_publish(&mut self, from: &str, data: &RawValue) -> u64 {
        let (seq, frame) = self.message(from, data);
        self.fan_out(&frame, None);
        seq
    }
}

impl Actor for Room {
    type Msg = ();
    type State = Arc<RoomCell>;
    type Arguments = Arc<RoomCell>;

    async fn pre_start(&self, _: ActorRef<()>, cell: Arc<RoomCell>) -> Result<Arc<RoomCell>, ActorProcessingErr> {
        Ok(cell)
    }

    async fn post_start(&self, myself: ActorRef<()>, cell: &mut Arc<RoomCell>) -> Result<(), ActorProcessingErr> {
        cell.mailbox.attach(myself);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, (): (), cell: &mut Arc<RoomCell>) -> Result<(), ActorProcessingErr> {
        let mut turn = cell.mailbox.turn();
        while let Some(msg) = turn.next() {
            if let RoomMsg::Crash = msg {
                panic!("fault injection: room {}", cell.name);
            }
            cell.apply(msg);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use parking_lot::Mutex;
    use serde_json::Value;

    use super::*;
    use crate::connection::testing::{collector, collector_with};
    use crate::connection::Control;
    use crate::rooms::RoomRegistry;
    use crate::supervisor;

    struct Fixture {
        rooms: RoomRegistry,
        metrics: Arc<Metrics>,
    }

    async fn fixture() -> Fixture {
        let metrics = Arc::new(Metrics::new());
        let tree = supervisor::start(4, metrics.clone(), &Default::default(), Arc::new(|_| {})).await.unwrap();
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
        assert_eq!(f.metrics.slow_consumers.get(), 1);
        let slow = slow_frames.lock().clone();
        assert_eq!(slow.last().map(String::as_str), Some("close 4008"), "{slow:?}");
        assert!(slow.len() < 10, "nothing more was queued for it: {slow:?}");
    }

    #[actix_web::test]
    async fn members_get_only_the_frame_kinds_their_transport_carries() {
        let f = fixture().await;
        let messages_only = Control::new(None, |kind| kind == ServerKind::Message);
        let (outbox, listener_frames) = collector_with(4, messages_only);
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
        assert_eq!(f.metrics.slow_consumers.get(), 0);
    }
}
