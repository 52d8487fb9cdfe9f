//! One conformance suite for both directories (cluster-wide presence and
//! node liveness): the in-memory one and the Redis one against a real
//! `redis-server`. Each case runs with nodes `a`, `b` and `c` sharing one
//! directory.

use crate::support::*;

use std::sync::Arc;
use std::time::Duration;

use herald::cluster::backplane::Backplane;
use herald::cluster::directory::{Changes, Directory, MemoryDirectory, Nodes, RedisDirectory};
use herald::ids::{NodeId, RoomName, UserId};

const TTL: Duration = Duration::from_millis(1000);

fn node(id: &str) -> NodeId {
    id.into()
}

fn room(name: &str) -> RoomName {
    name.into()
}

fn user(id: &str) -> UserId {
    id.into()
}

/// A room's member: a user on a node.
fn member(node: &str, user: &str) -> (NodeId, UserId) {
    (node.into(), user.into())
}

/// A node's entry: a user in a room.
fn entry(room: &str, user: &str) -> (RoomName, UserId) {
    (room.into(), user.into())
}

fn users(ids: &[&str]) -> Vec<UserId> {
    ids.iter().map(|&id| user(id)).collect()
}

fn nodes(alive: &[&str], dead: &[&str]) -> Nodes {
    Nodes { alive: alive.iter().map(|&id| node(id)).collect(), dead: dead.iter().map(|&id| node(id)).collect() }
}

async fn conformance(d: Arc<dyn Directory>) {
    assert!(d.is_connected());
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let (hall, other, fast) = (room("hall"), room("other"), room("fast"));
    // Registration: the first heartbeat says the node was not registered.
    assert!(d.heartbeat(&a, TTL).await.unwrap());
    assert!(!d.heartbeat(&a, TTL).await.unwrap());
    assert!(d.heartbeat(&b, TTL).await.unwrap());
    assert_eq!(d.nodes().await.unwrap(), nodes(&["a", "b"], &[]));

    // Rooms hold (node, user) entries; users with tabs on two nodes are listed by both.
    d.room_joined(&a, &hall, &user("alice")).await.unwrap();
    d.room_joined(&b, &hall, &user("alice")).await.unwrap();
    d.room_joined(&b, &hall, &user("bob")).await.unwrap();
    d.room_joined(&a, &other, &user("carol")).await.unwrap();
    assert_eq!(d.room_members(&hall).await.unwrap(), [member("a", "alice"), member("b", "alice"), member("b", "bob")]);
    assert_eq!(d.room_count(&hall).await.unwrap(), 2, "alice counts once");
    d.room_left(&a, &hall, &user("alice")).await.unwrap();
    assert_eq!(d.room_members(&hall).await.unwrap(), [member("b", "alice"), member("b", "bob")]);
    assert!(d.room_members(&room("nowhere")).await.unwrap().is_empty());
    assert_eq!(d.room_count(&room("nowhere")).await.unwrap(), 0);

    // Online status is any live node's.
    d.user_online(&a, &user("alice")).await.unwrap();
    d.user_online(&b, &user("alice")).await.unwrap();
    d.user_online(&b, &user("bob")).await.unwrap();
    assert_eq!(d.online(users(&["alice", "bob", "nobody"])).await.unwrap(), [true, true, false]);
    d.user_offline(&a, &user("alice")).await.unwrap();
    assert_eq!(d.online(users(&["alice"])).await.unwrap(), [true], "still online on b");
    assert!(d.online(Vec::new()).await.unwrap().is_empty());

    // Calls take effect in the order made, whether or not awaited in between.
    let (x, y) = (user("x"), user("y"));
    let calls = [d.room_joined(&a, &fast, &x), d.room_left(&a, &fast, &x), d.room_joined(&a, &fast, &y)];
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(d.room_members(&fast).await.unwrap(), [member("a", "y")]);

    // A node's entries in one room can be rewritten wholesale, reporting the change.
    d.room_joined(&a, &hall, &user("dave")).await.unwrap();
    let changes = d.replace_room(&a, &hall, users(&["erin", "dave"])).await.unwrap();
    assert_eq!(changes, Changes { removed: vec![], added: users(&["erin"]) });
    let changes = d.replace_room(&a, &hall, users(&["frank"])).await.unwrap();
    let mut removed = changes.removed.clone();
    removed.sort();
    assert_eq!((removed, changes.added), (users(&["dave", "erin"]), users(&["frank"])));
    assert_eq!(d.room_members(&other).await.unwrap(), [member("a", "carol")], "other rooms untouched");

    // Dropping a node's entries in rooms it no longer has.
    let dropped = d.retain_rooms(&a, vec![hall.clone()]).await.unwrap();
    let mut dropped_rooms: Vec<_> = dropped.iter().map(|(r, _)| r.as_str()).collect();
    dropped_rooms.sort();
    assert_eq!(dropped_rooms, ["fast", "other"]);
    assert!(dropped.contains(&entry("other", "carol")));
    assert!(d.room_members(&other).await.unwrap().is_empty());
    assert_eq!(d.room_members(&hall).await.unwrap(), [member("a", "frank"), member("b", "alice"), member("b", "bob")]);

    // Online users rewritten wholesale.
    d.replace_users(&b, users(&["zed"])).await.unwrap();
    assert_eq!(d.online(users(&["alice", "bob", "zed"])).await.unwrap(), [false, false, true]);

    // Names with separators and spaces are kept whole.
    d.room_joined(&a, &room("chat:1.x-y_z"), &user("user with spaces:and:colons")).await.unwrap();
    assert_eq!(d.room_members(&room("chat:1.x-y_z")).await.unwrap(), [member("a", "user with spaces:and:colons")]);

    // Liveness: b stops heartbeating. Its entries vanish from answers once
    // its heartbeat lapses, before anyone sweeps it.
    d.heartbeat(&c, TTL * 10).await.unwrap();
    d.room_joined(&c, &hall, &user("carl")).await.unwrap();
    let deadline = std::time::Instant::now() + TTL * 3;
    while d.nodes().await.unwrap().dead.is_empty() {
        assert!(std::time::Instant::now() < deadline, "b's heartbeat never lapsed");
        d.heartbeat(&a, TTL).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.heartbeat(&a, TTL).await.unwrap();
    assert_eq!(d.nodes().await.unwrap(), nodes(&["a", "c"], &["b"]));
    assert_eq!(d.room_members(&hall).await.unwrap(), [member("a", "frank"), member("c", "carl")]);
    assert_eq!(d.room_count(&hall).await.unwrap(), 2, "b's users no longer count");
    assert_eq!(d.online(users(&["zed"])).await.unwrap(), [false]);

    // One sweep wins; a live node is never swept.
    assert!(!d.sweep(&a).await.unwrap(), "a is alive");
    let (first, second) = tokio::join!(d.sweep(&b), d.sweep(&b));
    assert!(first.unwrap() ^ second.unwrap(), "exactly one sweep removes b");
    assert_eq!(d.nodes().await.unwrap(), nodes(&["a", "c"], &[]));
    // A swept node that comes back learns it was unregistered.
    assert!(d.heartbeat(&b, TTL).await.unwrap());
    assert!(d.room_members(&hall).await.unwrap().iter().all(|(n, _)| n != "b"), "b's old entries are gone");

    // Departing removes a node and its entries at once.
    d.depart(&c).await.unwrap();
    assert_eq!(d.nodes().await.unwrap(), nodes(&["a", "b"], &[]));
    assert_eq!(d.room_members(&hall).await.unwrap(), [member("a", "frank")]);

    // Socket.IO session records: taken once, replaced by a later keep,
    // gone after their time.
    d.keep_session(7, "alice\nhall,e1,3".into(), TTL).await.unwrap();
    d.keep_session(7, "alice\nhall,e1,4".into(), TTL).await.unwrap();
    let (first, second) = tokio::join!(d.take_session(7), d.take_session(7));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.is_some() ^ second.is_some(), "exactly one reconnect takes the record");
    assert_eq!(first.or(second).as_deref(), Some("alice\nhall,e1,4"));
    assert_eq!(d.take_session(8).await.unwrap(), None);
    d.keep_session(9, "bob\n".into(), Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(d.take_session(9).await.unwrap(), None, "a record lapses");
}

#[tokio::test]
async fn the_memory_directory_conforms() {
    conformance(Arc::new(MemoryDirectory::default())).await;
}

#[tokio::test]
async fn the_redis_directory_conforms() {
    let redis = RedisServer::start();
    let backplane = Arc::new(Backplane::connect(&redis.url(), WAIT).await.unwrap());
    conformance(Arc::new(RedisDirectory::new(backplane))).await;
}

#[tokio::test]
async fn the_redis_directory_fails_fast_while_redis_is_away() {
    let mut redis = RedisServer::start();
    let backplane = Arc::new(Backplane::connect(&redis.url(), WAIT).await.unwrap());
    let d = RedisDirectory::new(backplane);
    d.heartbeat(&node("a"), TTL).await.unwrap();
    redis.stop();
    assert!(eventually(WAIT, || async { !d.is_connected() }).await);
    let started = std::time::Instant::now();
    assert!(d.room_members(&room("hall")).await.is_err());
    assert!(d.heartbeat(&node("a"), TTL).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(500), "calls fail at once, not after a timeout");
    redis.restart();
    assert!(eventually(Duration::from_secs(10), || async { d.is_connected() }).await);
    assert!(d.heartbeat(&node("a"), TTL).await.unwrap(), "Redis lost everything: a is unregistered");
}
