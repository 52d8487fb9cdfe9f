//! Rooms on one node and in a pair of clustered nodes, over collecting outboxes.

use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use super::*;
use crate::delivery::testing::{collector, collector_with};
use crate::metrics::Fault;
use crate::rooms::RoomRegistry;
use crate::server::tree;

struct Fixture {
    rooms: RoomRegistry,
    metrics: Arc<Metrics>,
}

async fn fixture() -> Fixture {
    fixture_with("").await
}

/// A node whose config has `toml` (its `[[namespaces]]`).
async fn fixture_with(toml: &str) -> Fixture {
    let metrics = Arc::new(Metrics::new());
    let namespaces = namespaces(toml);
    let rooms = tree::RoomSetup { namespaces, ..tree::RoomSetup::new(4, usize::MAX, archive(&metrics)) };
    let tree = tree::start(rooms, metrics.clone(), &Default::default(), Arc::new(|_| {}), None)
        .await
        .unwrap();
    Fixture { rooms: tree.rooms, metrics }
}

fn namespaces(toml: &str) -> Arc<crate::rooms::Namespaces> {
    Arc::new(crate::rooms::Namespaces::new(&crate::config::Config::from_toml(toml).unwrap()))
}

fn archive(metrics: &Arc<Metrics>) -> Arc<crate::rooms::Archive> {
    Arc::new(crate::rooms::Archive::new(Default::default(), metrics.clone()))
}

fn member(conn: u64, user: &str, capacity: usize) -> (Member, Arc<Mutex<Vec<String>>>) {
    let (outbox, frames) = collector(capacity);
    (Member { conn: ConnId(conn), user: user.into(), outbox }, frames)
}

/// Lets queued deliveries reach the collectors.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// What a member was sent, but for the `joined` each join writes (see
/// `joined_comes_first_with_its_id`).
fn taken(frames: &Mutex<Vec<String>>) -> Vec<Value> {
    taken_all(frames).into_iter().filter(|frame| frame["type"] != "joined").collect()
}

fn taken_all(frames: &Mutex<Vec<String>>) -> Vec<Value> {
    frames.lock().drain(..).map(|f| serde_json::from_str(&f).unwrap()).collect()
}

fn names(users: &UserList) -> Vec<String> {
    users.names()
}

fn data(json: &str) -> &RawValue {
    serde_json::from_str(json).unwrap()
}

/// Two nodes in one process, joined by the in-memory relay and directory.
async fn clustered_pair() -> (Fixture, Fixture) {
    clustered_pair_on(Arc::new(crate::cluster::relay::MemoryHub::default())).await
}

/// [`clustered_pair`] over `hub`, the in-memory Redis.
async fn clustered_pair_on(hub: Arc<crate::cluster::relay::MemoryHub>) -> (Fixture, Fixture) {
    clustered_pair_with(hub, "").await
}

/// [`clustered_pair_on`], both nodes configured with `toml`.
async fn clustered_pair_with(hub: Arc<crate::cluster::relay::MemoryHub>, toml: &str) -> (Fixture, Fixture) {
    use crate::cluster::directory::MemoryDirectory;
    use crate::cluster::relay::MemoryRelay;
    use crate::cluster::Membership;
    use crate::delivery::Registry;
    use crate::server::tree::Clustering;
    let directory = Arc::new(MemoryDirectory::default());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let metrics = Arc::new(Metrics::new());
        let relay = Arc::new(MemoryRelay::new(hub.clone()));
        let cluster = Membership::new(id.into(), relay, directory.clone(), metrics.clone(), Duration::from_secs(60));
        let clustering = Clustering { cluster, connections: Arc::new(Registry::default()) };
        let namespaces = namespaces(toml);
        let rooms = tree::RoomSetup { namespaces, ..tree::RoomSetup::new(2, usize::MAX, archive(&metrics)) };
        let tree = tree::start(rooms, metrics.clone(), &Default::default(), Arc::new(|_| {}), Some(clustering))
            .await
            .unwrap();
        nodes.push(Fixture { rooms: tree.rooms, metrics });
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

#[actix_web::test]
async fn clustered_rooms_share_seq_and_users_and_drop_dead_nodes() {
    let (a, b) = clustered_pair().await;
    let (alice, alice_frames) = member(1, "alice", 64);
    let (bob, bob_frames) = member(1, "bob", 64);
    let (alice_tab, _) = member(2, "alice", 64);
    let (room_a, users) = a.rooms.join("r".into(), alice, None, None).await.unwrap();
    assert_eq!(names(&users), ["alice"]);
    let (room_b, users) = b.rooms.join("r".into(), bob, None, None).await.unwrap();
    assert_eq!(names(&users), ["alice", "bob"], "the join lists the other node's users");
    // A second tab of alice, on b: still one alice, no user_joined for her.
    let (_, users) = b.rooms.join("r".into(), alice_tab, None, None).await.unwrap();
    assert_eq!(names(&users), ["alice", "bob"]);
    settle().await;
    let joined: Vec<_> = taken(&alice_frames).into_iter().filter(|f| f["type"] == "user_joined").collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["user"], "bob");
    assert!(taken(&bob_frames).iter().all(|f| f["type"] != "user_joined"), "bob joined after alice");

    room_a.publish(ConnId(1), "alice".into(), data("1"), true, Some(data("\"x\"")));
    room_b.publish(ConnId(1), "bob".into(), data("2"), true, None);
    room_a.publish(ConnId(1), "alice".into(), data("3"), true, None);
    settle().await;
    let seqs = |frames: &[Value]| -> Vec<(u64, Value)> {
        frames.iter().filter(|f| f["type"] == "message").map(|f| (f["seq"].as_u64().unwrap(), f["data"].clone())).collect()
    };
    let at_a = taken(&alice_frames);
    assert_eq!(at_a[0]["type"], "ack", "the ack comes first: {at_a:?}");
    assert_eq!(seqs(&at_a), seqs(&taken(&bob_frames)), "one numbering on both nodes");
    assert_eq!(seqs(&at_a).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);

    // Node b dies: a drops its users; alice is still in the room on a.
    a.rooms.nodes_gone(Arc::new(std::iter::once(NodeId::from("b")).collect()));
    settle().await;
    let left = taken(&alice_frames);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((&left[0]["type"], &left[0]["user"]), (&"user_left".into(), &"bob".into()));
}

#[actix_web::test]
async fn a_join_ahead_of_its_node_waits_for_the_room_and_not_forever() {
    use crate::cluster::relay::{Channel, MemoryHub, MemoryRelay, Relay};
    let hub = Arc::new(MemoryHub::default());
    let (a, b) = clustered_pair_on(hub.clone()).await;
    let (alice, _) = member(1, "alice", 64);
    let (room_a, _) = a.rooms.join("r".into(), alice, None, None).await.unwrap();
    let (bob, bob_frames) = member(1, "bob", 64);
    b.rooms.join("r".into(), bob, None, None).await.unwrap();
    room_a.publish(ConnId(1), "alice".into(), data("1"), true, None);
    settle().await;
    // The counter moves past what either node has seen, with no message
    // (as when it is raised after an outage): a client that says it saw 5
    // waits for b to catch up, which it never will, then comes in.
    MemoryRelay::new(hub).raise_counter(&Channel::Room("r".into()), 5, false).await.unwrap();
    let (carol, carol_frames) = member(2, "carol", 64);
    let started = std::time::Instant::now();
    let since = Some(Since { seq: 5, epoch: None });
    b.rooms.join("r".into(), carol, None, since).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited for the room to catch up");
    let joined = taken_all(&carol_frames);
    assert_eq!((&joined[0]["recovered"], &joined[0]["seq"]), (&Value::Bool(true), &5.into()), "{joined:?}");
    // A message it has that arrives late is not sent to it again; the
    // others get it.
    taken_all(&bob_frames);
    let late = Body::Message {
        room: "r".into(),
        from: "dave".into(),
        data: "3".into(),
        ts: 0,
        token: 0,
        except: None,
    };
    b.rooms.relayed(Some(3), "elsewhere".into(), late);
    settle().await;
    assert!(taken(&carol_frames).is_empty(), "carol has 3 already");
    assert_eq!(taken(&bob_frames).iter().map(|f| f["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3]);
    // Live from there.
    room_a.publish(ConnId(1), "alice".into(), data("2"), true, None);
    settle().await;
    let seqs: Vec<_> = taken(&carol_frames).iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [6]);
}

#[actix_web::test]
async fn a_join_ahead_of_its_node_comes_in_when_the_room_catches_up() {
    use crate::cluster::relay::{Channel, MemoryHub, MemoryRelay, Relay};
    let hub = Arc::new(MemoryHub::default());
    let (a, b) = clustered_pair_on(hub.clone()).await;
    let (alice, _) = member(1, "alice", 64);
    let (room_a, _) = a.rooms.join("r".into(), alice, None, None).await.unwrap();
    let (bob, _) = member(1, "bob", 64);
    b.rooms.join("r".into(), bob, None, None).await.unwrap();
    MemoryRelay::new(hub).raise_counter(&Channel::Room("r".into()), 5, false).await.unwrap();
    let (carol, carol_frames) = member(2, "carol", 64);
    let started = std::time::Instant::now();
    let join = b.rooms.join("r".into(), carol, None, Some(Since { seq: 5, epoch: None }));
    settle().await;
    assert!(carol_frames.lock().is_empty(), "carol waits for b to reach 5");
    room_a.publish(ConnId(1), "alice".into(), data("6"), true, None);
    join.await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(900), "in as soon as the room caught up");
    settle().await;
    let frames = taken_all(&carol_frames);
    assert_eq!((&frames[0]["type"], &frames[0]["recovered"], &frames[0]["seq"]), (&"joined".into(), &Value::Bool(true), &5.into()));
    let seqs: Vec<_> = frames[1..].iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [6], "what came while it waited, once");
}

#[actix_web::test]
async fn a_member_whose_join_again_is_given_up_on_stays_in_the_room() {
    use crate::cluster::relay::{Channel, MemoryHub, MemoryRelay, Relay};
    let hub = Arc::new(MemoryHub::default());
    let (a, b) = clustered_pair_on(hub.clone()).await;
    let (alice, alice_frames) = member(1, "alice", 64);
    let (room_a, _) = a.rooms.join("r".into(), alice, None, None).await.unwrap();
    let (bob, bob_frames) = member(1, "bob", 64);
    let outbox = bob.outbox.clone();
    b.rooms.join("r".into(), bob, None, None).await.unwrap();
    settle().await;
    MemoryRelay::new(hub).raise_counter(&Channel::Room("r".into()), 5, false).await.unwrap();
    // Bob joins again, ahead of b (so the join waits), and his connection
    // stops waiting for the answer.
    let again = Member { conn: ConnId(1), user: "bob".into(), outbox };
    let join = tokio::spawn(b.rooms.join("r".into(), again, None, Some(Since { seq: 5, epoch: None })));
    settle().await;
    join.abort();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    taken_all(&bob_frames);
    taken_all(&alice_frames);
    room_a.publish(ConnId(1), "alice".into(), data("6"), true, None);
    settle().await;
    let got: Vec<_> = taken_all(&bob_frames).iter().map(|f| (f["type"].clone(), f["seq"].clone())).collect();
    assert_eq!(got, [("message".into(), 6.into())], "still in the room");
    assert!(taken_all(&alice_frames).iter().all(|f| f["type"] != "user_left"), "nobody saw bob leave");
}

#[actix_web::test]
async fn fans_out_with_increasing_seq_and_acks_the_publisher() {
    let f = fixture().await;
    let (alice, alice_frames) = member(1, "alice", 16);
    let (bob, bob_frames) = member(2, "bob", 16);
    let (room, users) = f.rooms.join("r".into(), alice, None, None).await.unwrap();
    assert_eq!(names(&users), ["alice"]);
    let (_, users) = f.rooms.join("r".into(), bob, None, None).await.unwrap();
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
async fn an_idle_room_keeps_no_queue_and_stays_small() {
    let f = fixture().await;
    let (alice, _) = member(1, "alice", 16);
    let (handle, _) = f.rooms.join("r".into(), alice, None, None).await.unwrap();
    handle.publish(ConnId(1), "alice".into(), data("1"), true, None);
    settle().await;
    assert_eq!(handle.room.mailbox.buffered(), 0, "the queue's buffer went with its last message");
    let (cell, state, msg) =
        (std::mem::size_of::<RoomCell>(), std::mem::size_of::<RoomState>(), std::mem::size_of::<RoomMsg>());
    println!("RoomCell: {cell} bytes, RoomState: {state} bytes, RoomMsg: {msg} bytes");
    assert!(cell <= 240, "RoomCell grew to {cell} bytes");
    assert!(msg <= 120, "RoomMsg grew to {msg} bytes");
}

#[actix_web::test]
async fn counts_users_not_connections() {
    let f = fixture().await;
    let (watcher, watcher_frames) = member(1, "watcher", 16);
    f.rooms.join("r".into(), watcher, None, None).await.unwrap();
    for conn in 2..5 {
        let (tab, _) = member(conn, "alice", 16);
        let (_, users) = f.rooms.join("r".into(), tab, None, None).await.unwrap();
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
    let (room, _) = f.rooms.join("r".into(), alice, None, None).await.unwrap();
    room.publish(ConnId(1), "alice".into(), data("1"), true, None);
    room.publish(ConnId(1), "alice".into(), data("2"), true, None);
    f.rooms.leave("r".into(), ConnId(1));
    settle().await;
    assert_eq!(f.metrics.rooms.get(), 0, "the empty room stopped");
    assert_eq!(f.rooms.last_seq("r".into()).await.unwrap(), 2);
    let (bob, bob_frames) = member(2, "bob", 16);
    let (room, _) = f.rooms.join("r".into(), bob, None, None).await.unwrap();
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
        f.rooms.join("race".into(), a, None, None).await.unwrap();
        f.rooms.leave("race".into(), ConnId(round * 2));
        let (room, users) = f.rooms.join("race".into(), b, None, None).await.unwrap();
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
        f.rooms.join("r".into(), a, None, None).await.unwrap();
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
    // Room for its `joined` and fast's `user_joined`, and no more.
    let (slow, slow_frames) = member(1, "slow", 2);
    let (fast, fast_frames) = member(2, "fast", 1000);
    let (room, _) = f.rooms.join("r".into(), slow, None, None).await.unwrap();
    f.rooms.join("r".into(), fast, None, None).await.unwrap();
    for _ in 0..200 {
        room.publish(ConnId(2), "fast".into(), data("0"), true, None);
    }
    settle().await;
    let fast = taken(&fast_frames);
    assert_eq!(fast.iter().filter(|m| m["type"] == "message").count(), 200);
    let left: Vec<_> = fast.iter().filter(|m| m["type"] == "user_left").collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["user"], "slow");
    assert_eq!(f.metrics.connections_dropped(Fault::SlowConsumer), 1);
    let slow = slow_frames.lock().clone();
    assert_eq!(slow.last().map(String::as_str), Some("close 4008"), "{slow:?}");
    assert!(slow.len() < 10, "nothing more was queued for it: {slow:?}");
}

#[actix_web::test]
async fn members_get_only_the_frame_kinds_their_transport_carries() {
    let f = fixture().await;
    let (outbox, listener_frames) = collector_with(4, |kind| kind == ServerKind::Message);
    let listener = Member { conn: ConnId(1), user: "listener".into(), outbox };
    let (talker, _) = member(2, "talker", 1000);
    let (room, _) = f.rooms.join("r".into(), listener, None, None).await.unwrap();
    f.rooms.join("r".into(), talker, None, None).await.unwrap();
    // Ten times its queue in frames it does not carry: none is queued.
    for _ in 0..40 {
        room.typing(ConnId(2), "talker".into(), true);
    }
    room.publish(ConnId(2), "talker".into(), data("1"), true, None);
    settle().await;
    let got = taken(&listener_frames);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["type"].as_str(), got[0]["seq"].as_u64()), (Some("message"), Some(1)));
    assert_eq!(f.metrics.connections_dropped(Fault::SlowConsumer), 0);
}

#[actix_web::test]
async fn a_rooms_user_list_is_built_once_per_change_and_shared_until_the_next() {
    let f = fixture().await;
    let (alice, _) = member(1, "alice", 64);
    let (_, alone) = f.rooms.join("r".into(), alice, None, None).await.unwrap();
    let asked = f.rooms.presence("r".into()).await.expect("the room is alive");
    assert_eq!(names(&asked), ["alice"]);
    assert!(!asked.shares(&alone), "one name is built on each ask, not kept");

    let (carol, _) = member(4, "carol", 64);
    let (_, joined) = f.rooms.join("r".into(), carol, None, None).await.unwrap();
    let asked = f.rooms.presence("r".into()).await.unwrap();
    assert!(asked.shares(&joined), "presence shares the list the join built");
    let again = f.rooms.presence("r".into()).await.unwrap();
    assert!(again.shares(&asked), "nothing changed: the same list");

    // A second connection of alice changes no user: still the same list.
    let (alice_tab, _) = member(2, "alice", 64);
    let (_, tab_joined) = f.rooms.join("r".into(), alice_tab, None, None).await.unwrap();
    assert!(tab_joined.shares(&asked));

    // A new user is a change: one new list, shared again.
    let (bob, _) = member(3, "bob", 64);
    let (_, bob_joined) = f.rooms.join("r".into(), bob, None, None).await.unwrap();
    assert!(!bob_joined.shares(&asked));
    assert_eq!((names(&bob_joined), bob_joined.len()), (vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()], 3));
    assert!(f.rooms.presence("r".into()).await.unwrap().shares(&bob_joined));

    // bob leaving is a change too.
    f.rooms.leave("r".into(), ConnId(3));
    let after = f.rooms.presence("r".into()).await.unwrap();
    assert_eq!(names(&after), ["alice", "carol"]);
    assert!(f.rooms.presence("r".into()).await.unwrap().shares(&after));
    assert!(f.rooms.presence("nowhere".into()).await.is_none(), "a room not alive here has no list");
}

#[actix_web::test]
async fn past_max_rooms_a_join_that_would_create_a_room_is_refused() {
    let metrics = Arc::new(Metrics::new());
    let tree = tree::start(tree::RoomSetup::new(4, 2, archive(&metrics)), metrics.clone(), &Default::default(), Arc::new(|_| {}), None)
        .await
        .unwrap();
    let rooms = tree.rooms;
    for (conn, room) in [(1, "a"), (2, "b")] {
        let (m, _) = member(conn, "u", 8);
        rooms.join(room.into(), m, None, None).await.unwrap();
    }
    let (m, _) = member(3, "u", 8);
    assert!(matches!(rooms.join("c".into(), m, None, None).await, Err(crate::rooms::JoinError::RoomsFull)));
    let refused = || {
        let text = metrics.render();
        text.lines().find(|l| l.starts_with(r#"herald_joins_refused_total{reason="max_rooms"}"#)).map(str::to_owned)
    };
    assert_eq!(refused().as_deref(), Some(r#"herald_joins_refused_total{reason="max_rooms"} 1"#));
    // Joining a room that exists creates nothing: allowed at the cap.
    let (m, _) = member(4, "v", 8);
    rooms.join("a".into(), m, None, None).await.unwrap();
    // Once a room is gone, there is room for another.
    rooms.leave("b".into(), ConnId(2));
    let (m, _) = member(5, "u", 8);
    let mut joined = false;
    for _ in 0..100 {
        if rooms.join("c".into(), m.clone(), None, None).await.is_ok() {
            joined = true;
            break;
        }
        settle().await;
    }
    assert!(joined, "the room b left behind is given back to the cap");
    assert!(rooms.presence("b".into()).await.is_none(), "b is gone");
}

#[actix_web::test]
async fn a_join_nobody_waits_for_any_more_does_not_happen() {
    let f = fixture().await;
    let (alice, alice_frames) = member(1, "alice", 64);
    f.rooms.join("r".into(), alice, None, None).await.unwrap();
    // Queued, and given up on at once: as a connection whose call timed out.
    let (bob, _) = member(2, "bob", 64);
    drop(f.rooms.join("r".into(), bob, None, None));
    settle().await;
    assert_eq!(names(&f.rooms.presence("r".into()).await.unwrap()), ["alice"]);
    assert!(taken(&alice_frames).is_empty(), "no user_joined for a join that did not happen");
}

#[actix_web::test]
async fn joined_comes_first_with_its_id() {
    let f = fixture().await;
    let (alice, _) = member(1, "alice", 4096);
    let (room, _) = f.rooms.join("r".into(), alice, None, None).await.unwrap();
    // alice publishes without pause while bob joins: whatever bob gets of
    // the room comes after his `joined`.
    let publishing = {
        let room = room.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                room.publish(ConnId(1), "alice".into(), data(&n.to_string()), true, None);
                tokio::task::yield_now().await;
            }
        })
    };
    let (bob, bob_frames) = member(2, "bob", 4096);
    f.rooms.join("r".into(), bob, Some(data("\"j1\"").to_owned()), None).await.unwrap();
    publishing.await.unwrap();
    settle().await;
    let frames = taken_all(&bob_frames);
    assert_eq!(frames[0]["type"], "joined", "{:?}", &frames[..frames.len().min(3)]);
    assert_eq!((&frames[0]["id"], &frames[0]["count"]), (&serde_json::json!("j1"), &serde_json::json!(2)));
    assert!(frames[1..].iter().all(|frame| frame["type"] == "message"), "then only the room's messages");
}

/// The seam between replay and live delivery, under random interleavings of
/// publishes (by members and by the server API, on either node of a pair)
/// and rejoins with `since` (after a drop, or in place), on one node and in
/// a cluster: every stretch a connection gets after a `joined` is the run of
/// `seq` right after where it asked to resume, with no gap and nothing twice,
/// and the last one reaches the last message.
mod seam {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A publish on node `on` (0 or 1), by a member or the server API.
        Publish { on: usize, api: bool },
        /// Client `client` loses its connection.
        Drop { client: usize },
        /// Client `client` joins again with `since` on node `on`: on a new
        /// connection if it dropped, else on the one it has.
        Rejoin { client: usize, on: usize },
        /// A moment for what is in flight.
        Pause,
    }

    const CLIENTS: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, any::<bool>()).prop_map(|(on, api)| Op::Publish { on, api }),
            1 => (0..CLIENTS).prop_map(|client| Op::Drop { client }),
            2 => (0..CLIENTS, 0..2usize).prop_map(|(client, on)| Op::Rejoin { client, on }),
            1 => Just(Op::Pause),
        ]
    }

    /// One client: its connections so far, each with what it was sent.
    struct Client {
        user: UserId,
        sessions: Vec<Arc<Mutex<Vec<String>>>>,
        /// The connection it has (its id, node and outbox), if any.
        current: Option<(ConnId, usize, Outbox)>,
    }

    /// Where a client is in the room, over every connection it had, as a
    /// client keeps it: the last message's `seq`, or a plain `joined`'s
    /// (the state it starts from), whichever is later.
    fn last_seen(client: &Client) -> u64 {
        client
            .sessions
            .iter()
            .flat_map(|frames| frames.lock().clone())
            .filter_map(|f| serde_json::from_str::<Value>(&f).ok())
            .filter(|f| f["type"] == "message" || (f["type"] == "joined" && f.get("recovered").is_none()))
            .filter_map(|f| f["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Checks one connection's frames; returns the `seq` it is up to (the
    /// last it got, or where its latest join resumed from).
    fn check_session(frames: &[String], asked: &[Option<u64>]) -> Result<u64, TestCaseError> {
        let mut joins = asked.iter();
        let mut next: Option<u64> = None;
        for frame in frames {
            let frame: Value = serde_json::from_str(frame).unwrap();
            match frame["type"].as_str() {
                Some("joined") => {
                    let since = joins.next().copied().flatten();
                    let latest = frame["seq"].as_u64().unwrap();
                    if since.is_some() {
                        prop_assert_eq!(&frame["recovered"], &Value::Bool(true), "{}", frame);
                    }
                    next = Some(since.unwrap_or(latest) + 1);
                }
                Some("message") => {
                    let seq = frame["seq"].as_u64().unwrap();
                    let expected = next.expect("a message after joined");
                    prop_assert_eq!(seq, expected, "a gap or a repeat at the seam: {:?}", frames);
                    next = Some(seq + 1);
                }
                _ => {}
            }
        }
        Ok(next.map_or(0, |n| n - 1))
    }

    async fn run(ops: Vec<Op>, clustered: bool) -> Result<(), TestCaseError> {
        let nodes: Vec<Fixture> = if clustered {
            let (a, b) = clustered_pair().await;
            vec![a, b]
        } else {
            vec![fixture().await]
        };
        let node = |on: usize| &nodes[on % nodes.len()].rooms;
        let room: RoomName = "seam".into();
        // A publisher on each node.
        let mut publishers = Vec::new();
        for on in 0..nodes.len() {
            let (member, _) = member(100 + on as u64, "publisher", usize::MAX);
            publishers.push(node(on).join(room.clone(), member, None, None).await.unwrap().0);
        }
        let mut clients: Vec<Client> =
            (0..CLIENTS).map(|i| Client { user: format!("c{i}").into(), sessions: Vec::new(), current: None }).collect();
        // What each connection asked to resume from, join by join.
        let mut asked: HashMap<(usize, usize), Vec<Option<u64>>> = HashMap::new();
        let mut next_conn = 1;
        let mut pending = Vec::new();
        let mut published = 0u64;
        let mut open = |client: &mut Client, index: usize, on: usize, since: Option<u64>, asked: &mut HashMap<_, _>| {
            let (outbox, frames) = collector(usize::MAX);
            let conn = ConnId(next_conn);
            next_conn += 1;
            client.sessions.push(frames);
            client.current = Some((conn, on, outbox.clone()));
            asked.insert((index, client.sessions.len() - 1), vec![since]);
            let since = since.map(|seq| Since { seq, epoch: None });
            let join = node(on).join(room.clone(), Member { conn, user: client.user.clone(), outbox }, None, since);
            async move {
                let _ = join.await;
            }
        };
        for (index, client) in clients.iter_mut().enumerate() {
            pending.push(tokio::spawn(open(client, index, index, None, &mut asked)));
        }
        for op in ops {
            match op {
                Op::Publish { on, api } => {
                    published += 1;
                    let on = on % nodes.len();
                    if api {
                        let call = node(on).publish_from_server(room.clone(), "api".into(), data("1").to_owned());
                        pending.push(tokio::spawn(async move {
                            call.await.unwrap();
                        }));
                    } else {
                        publishers[on].publish(ConnId(100 + on as u64), "publisher".into(), data("1"), true, None);
                    }
                }
                Op::Drop { client } => {
                    if let Some((conn, on, _)) = clients[client].current.take() {
                        node(on).leave(room.clone(), conn);
                    }
                }
                Op::Rejoin { client: index, on } => {
                    let client = &mut clients[index];
                    let since = Some(last_seen(client));
                    match client.current.clone() {
                        // In place: the same connection, on its own node.
                        Some((conn, on, outbox)) => {
                            let session = client.sessions.len() - 1;
                            asked.get_mut(&(index, session)).unwrap().push(since);
                            let member = Member { conn, user: client.user.clone(), outbox };
                            let since = since.map(|seq| Since { seq, epoch: None });
                            let join = node(on).join(room.clone(), member, None, since);
                            pending.push(tokio::spawn(async move {
                                let _ = join.await;
                            }));
                        }
                        None => {
                            let on = on % nodes.len();
                            pending.push(tokio::spawn(open(client, index, on, since, &mut asked)));
                        }
                    }
                }
                Op::Pause => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        for task in pending {
            let _ = task.await;
        }
        // Everything numbered reaches everyone still connected.
        let done = async {
            loop {
                let all = clients.iter().filter(|c| c.current.is_some()).all(|c| last_seen(c) == published);
                if all {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        prop_assert!(tokio::time::timeout(Duration::from_secs(5), done).await.is_ok(), "not everyone got all {} messages", published);
        for (index, client) in clients.iter().enumerate() {
            for (session, frames) in client.sessions.iter().enumerate() {
                let frames = frames.lock().clone();
                let last = check_session(&frames, &asked[&(index, session)])?;
                if client.current.is_some() && session == client.sessions.len() - 1 {
                    prop_assert_eq!(last, published);
                }
            }
        }
        Ok(())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn on_one_node(ops in proptest::collection::vec(op(), 1..60)) {
            runtime().block_on(run(ops, false))?;
        }

        #[test]
        fn in_a_cluster(ops in proptest::collection::vec(op(), 1..60)) {
            runtime().block_on(run(ops, true))?;
        }
    }
}

mod namespaces;
