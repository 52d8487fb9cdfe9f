//! Namespaces on one node, over real sockets: every option against its
//! default, the longest-prefix rule, `count` in every `joined` and
//! `presence` reply and in the presence API, and the `drop` and `latest`
//! slow-consumer policies under a reader that stops reading and resumes
//! while everyone else gets everything.

use crate::support::*;

use std::time::Duration;

use herald::config::{NamespaceConfig, SlowConsumer};
use herald::Config;
use serde_json::{json, Value};

const KEY: &str = "namespace-test-key";

fn namespace(prefix: &str, edit: impl FnOnce(&mut NamespaceConfig)) -> NamespaceConfig {
    let mut namespace = NamespaceConfig::new(prefix);
    edit(&mut namespace);
    namespace
}

fn ns_server(namespaces: Vec<NamespaceConfig>, edit: impl FnOnce(&mut Config)) -> TestServer {
    server_with(|config| {
        config.api.key = KEY.into();
        config.limits.rate_per_sec = 100_000;
        config.limits.rate_burst = 100_000;
        config.namespaces = namespaces;
        edit(config);
    })
}

async fn publish_api(server: &TestServer, room: &str, data: Value) -> u64 {
    publish_via_api(server.addr, KEY, room, data).await
}

async fn presence_api(server: &TestServer, room: &str) -> Value {
    let (status, reply) = api(server.addr, "GET", &format!("/api/rooms/{room}/presence"), Some(KEY), "").await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn presence_ws(client: &mut Client, room: &str) -> Value {
    client.send(json!({"type": "presence", "room": room, "id": "p"})).await;
    client.recv_type("presence").await
}

/// Sends a `join` with `since` and returns the `joined`.
async fn join_since(client: &mut Client, room: &str, since: u64, epoch: &str) -> Value {
    client.send(json!({"type": "join", "room": room, "since": since, "epoch": epoch})).await;
    client.recv_type("joined").await
}

#[tokio::test]
async fn presence_false_lists_no_one_and_still_counts_everyone() {
    let server = ns_server(vec![namespace("live.", |n| n.presence = false)], |_| {});
    let mut clients = Vec::new();
    for (n, user) in ["ann", "bob", "cat"].into_iter().enumerate() {
        let mut client = ws_connect_as(&server, user).await;
        let joined = client.join("live.show").await;
        assert_eq!(joined["users"], json!([]), "{joined}");
        assert_eq!(joined["count"], n + 1, "{joined}");
        clients.push(client);
    }
    // A second connection of one user is still one user.
    let mut ann_again = ws_connect_as(&server, "ann").await;
    assert_eq!(ann_again.join("live.show").await["count"], 3);
    // Presence by frame (no membership needed) and by the API.
    let mut outsider = ws_connect_as(&server, "dan").await;
    let presence = presence_ws(&mut outsider, "live.show").await;
    assert_eq!((presence["users"].clone(), presence["count"].clone(), presence["id"].clone()), (json!([]), json!(3), json!("p")));
    let reply = presence_api(&server, "live.show").await;
    assert_eq!((reply["users"].clone(), reply["count"].clone()), (json!([]), json!(3)), "{reply}");
    // Leaving counts down: bob's only connection, then one of ann's two.
    clients.remove(1).close().await;
    ann_again.close().await;
    let left = || async { presence_api(&server, "live.show").await["count"] == 2 };
    assert!(eventually(WAIT, left).await, "count after bob left: {}", presence_api(&server, "live.show").await);

    // A room in no namespace lists its users, and counts them the same.
    let mut ann = ws_connect_as(&server, "ann").await;
    ann.join("lobby").await;
    let joined = outsider.join("lobby").await;
    assert_eq!((joined["users"].clone(), joined["count"].clone()), (json!(["ann", "dan"]), json!(2)));
    let presence = presence_ws(&mut ann, "lobby").await;
    assert_eq!((presence["users"].clone(), presence["count"].clone()), (json!(["ann", "dan"]), json!(2)));
    let reply = presence_api(&server, "lobby").await;
    assert_eq!((reply["users"].clone(), reply["count"].clone()), (json!(["ann", "dan"]), json!(2)));
}

#[tokio::test]
async fn join_events_false_tells_the_members_nothing_of_arrivals_and_departures() {
    let server = ns_server(vec![namespace("quiet.", |n| n.join_events = false)], |_| {});
    let mut ann = ws_connect_as(&server, "ann").await;
    assert_eq!(ann.join("quiet.room").await["count"], 1);
    let mut others = Vec::new();
    for user in ["bob", "cat", "dan"] {
        let mut client = ws_connect_as(&server, user).await;
        let joined = client.join("quiet.room").await;
        assert!(joined["users"].as_array().unwrap().contains(&json!("ann")), "presence is still on: {joined}");
        others.push(client);
    }
    for client in others.drain(..) {
        client.close().await;
    }
    // Nothing at all reached ann; the room's messages still do.
    ann.expect_silence(Duration::from_millis(300)).await;
    let seq = publish_api(&server, "quiet.room", json!("hello")).await;
    assert_eq!(ann.recv_type("message").await["seq"], seq);
    assert_eq!(presence_ws(&mut ann, "quiet.room").await["count"], 1);

    // By default, each arrival and departure is told.
    let mut eve = ws_connect_as(&server, "eve").await;
    eve.join("loud.room").await;
    let mut fay = ws_connect_as(&server, "fay").await;
    fay.join("loud.room").await;
    assert_eq!(eve.recv().await, json!({"type": "user_joined", "room": "loud.room", "user": "fay"}));
    fay.close().await;
    assert_eq!(eve.recv().await, json!({"type": "user_left", "room": "loud.room", "user": "fay"}));
}

#[tokio::test]
async fn client_publish_false_refuses_publish_and_typing_while_the_api_still_publishes() {
    let server = ns_server(vec![namespace("notify.", |n| n.client_publish = false)], |_| {});
    let mut ann = ws_connect_as(&server, "ann").await;
    ann.join("notify.ann").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    bob.join("notify.ann").await;
    ann.recv_type("user_joined").await;
    for frame in [
        json!({"type": "publish", "room": "notify.ann", "data": "hi", "id": 1}),
        json!({"type": "typing", "room": "notify.ann", "typing": true, "id": 2}),
        // Not a member: refused for the same reason, first.
        json!({"type": "publish", "room": "notify.other", "data": "hi", "id": 3}),
    ] {
        let reply = ann.request(frame.clone()).await;
        assert_eq!((reply["type"].clone(), reply["code"].clone()), (json!("error"), json!("FORBIDDEN")), "{frame}: {reply}");
        assert_eq!(reply["id"], frame["id"]);
    }
    bob.expect_silence(Duration::from_millis(200)).await;
    let seq = publish_api(&server, "notify.ann", json!({"unread": 3})).await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_type("message").await;
        assert_eq!((message["seq"].as_u64(), message["data"].clone()), (Some(seq), json!({"unread": 3})));
    }
    // A room in no namespace takes client publishes and typing.
    ann.join("chat").await;
    assert_eq!(ann.request(json!({"type": "publish", "room": "chat", "data": 1, "echo": false, "id": "x"})).await["type"], "ack");
    assert_eq!(ann.request(json!({"type": "typing", "room": "chat", "typing": true, "id": "y"})).await["type"], "ack");
}

#[tokio::test]
async fn history_size_and_ttl_are_the_namespace_s_and_default_to_history_s() {
    let namespaces = vec![
        namespace("short.", |n| n.history_size = Some(2)),
        namespace("none.", |n| n.history_size = Some(0)),
        namespace("brief.", |n| n.history_ttl_ms = Some(150)),
    ];
    let server = ns_server(namespaces, |config| config.history.size = 4);
    let mut ann = ws_connect_as(&server, "ann").await;
    let epoch = ann.join("lobby").await["epoch"].as_str().unwrap().to_owned();
    for room in ["short.a", "none.a", "brief.a", "lobby"] {
        for n in 1..=5 {
            publish_api(&server, room, json!(n)).await;
        }
    }
    let recovered = |joined: Value| joined["recovered"].as_bool().unwrap_or_else(|| panic!("{joined}"));
    let mut bob = ws_connect_as(&server, "bob").await;
    // short.: two messages kept.
    assert!(!recovered(join_since(&mut bob, "short.a", 2, &epoch).await));
    assert!(recovered(join_since(&mut bob, "short.a", 3, &epoch).await));
    let replayed: Vec<Value> = vec![bob.recv_type("message").await["seq"].clone(), bob.recv_type("message").await["seq"].clone()];
    assert_eq!(replayed, [json!(4), json!(5)]);
    // none.: nothing kept, so only a client that missed nothing recovers.
    assert!(!recovered(join_since(&mut bob, "none.a", 4, &epoch).await));
    assert!(recovered(join_since(&mut bob, "none.a", 5, &epoch).await));
    let (_, page) = api(server.addr, "GET", "/api/rooms/none.a/history", Some(KEY), "").await;
    assert_eq!((page["seq"].clone(), page["messages"].clone()), (json!(5), json!([])), "{page}");
    // The default namespace keeps history.size = 4.
    assert!(!recovered(join_since(&mut bob, "lobby", 0, &epoch).await));
    assert!(recovered(join_since(&mut bob, "lobby", 1, &epoch).await));
    // brief.: dropped 150 ms after its last publish; the others' still there.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut cat = ws_connect_as(&server, "cat").await;
    assert!(!recovered(join_since(&mut cat, "brief.a", 3, &epoch).await));
    assert!(recovered(join_since(&mut cat, "lobby", 3, &epoch).await));
}

#[tokio::test]
async fn the_longest_matching_prefix_wins_and_unmatched_rooms_take_the_defaults() {
    let namespaces = vec![
        namespace("game.", |n| {
            n.presence = false;
            n.join_events = false;
        }),
        namespace("game.lobby.", |n| n.client_publish = false),
    ];
    let server = ns_server(namespaces, |_| {});
    let mut ann = ws_connect_as(&server, "ann").await;
    // game.lobby.* takes its own entry only: presence and join events on.
    assert_eq!(ann.join("game.lobby.eu").await["users"], json!(["ann"]));
    assert_eq!(ann.request(json!({"type": "publish", "room": "game.lobby.eu", "data": 1, "id": 1})).await["code"], "FORBIDDEN");
    // game.* (not game.lobby.): presence off, publishing on.
    assert_eq!(ann.join("game.match.7").await["users"], json!([]));
    assert_eq!(ann.request(json!({"type": "publish", "room": "game.match.7", "data": 1, "id": 2})).await["type"], "ack");
    // "game" matches no prefix.
    assert_eq!(ann.join("game").await["users"], json!(["ann"]));
    let mut bob = ws_connect_as(&server, "bob").await;
    bob.join("game.lobby.eu").await;
    assert_eq!(ann.recv_type("user_joined").await["room"], "game.lobby.eu");
}

// ---- slow consumers ------------------------------------------------------

/// A server whose `feed.` rooms have slow-consumer `policy`, with small
/// outbound queues (8 frames) and a ping every 50 ms: a heartbeat that
/// finds the queue full is no reason to close.
fn slow_server(policy: SlowConsumer) -> TestServer {
    let namespaces = vec![namespace("feed.", |n| {
        n.slow_consumer = policy;
        n.history_size = Some(1000);
    })];
    ns_server(namespaces, |config| {
        config.limits.outbound_queue = 8;
        config.limits.max_message_bytes = 1 << 20;
        config.heartbeat.interval_ms = 50;
        config.heartbeat.timeout_ms = 60_000;
    })
}

/// Publishes 20 KB messages to `room` (each read by `reader`, who gets every
/// one in order) until `series` has counted `at_least`, then `then` more.
/// Returns the last `seq`.
async fn flood_until(server: &TestServer, reader: &mut Client, room: &str, series: &str, at_least: f64, then: usize) -> u64 {
    let data = json!("z".repeat(20_000));
    let mut last = 0;
    let mut extra = None;
    for _ in 0..5000 {
        let seq = publish_api(server, room, data.clone()).await;
        let got = reader.recv_type("message").await;
        assert_eq!(got["seq"].as_u64(), Some(seq), "the reader gets every message, in order");
        last = seq;
        match &mut extra {
            None if Snapshot::take(server).await.get(series) >= at_least => extra = Some(then),
            Some(0) => return last,
            Some(left) => *left -= 1,
            None => {}
        }
    }
    panic!("{series} never reached {at_least} after {last} messages");
}

/// Reads `client`'s `message` frames of `room` until `last` arrives: their
/// `seq`s, strictly increasing. Anything else the connection gets (a close
/// above all) fails the test.
async fn read_through(client: &mut Client, room: &str, last: u64) -> Vec<u64> {
    let mut seqs: Vec<u64> = Vec::new();
    while seqs.last() != Some(&last) {
        match client.next_event_within(Duration::from_secs(10)).await {
            Some(Event::Frame(frame)) if frame["type"] == "message" && frame["room"] == room => {
                let seq = frame["seq"].as_u64().unwrap();
                assert!(seqs.last().is_none_or(|&before| seq > before), "{seq} after {seqs:?}");
                seqs.push(seq);
            }
            other => panic!("expected the messages up to {last}, got {other:?} after {} of them", seqs.len()),
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_reader_stays_connected_sees_the_jump_and_recovers_it_with_since() {
    let server = slow_server(SlowConsumer::Drop);
    let mut reader = ws_connect_as(&server, "reader").await;
    let epoch = reader.join("feed.news").await["epoch"].as_str().unwrap().to_owned();
    let mut slow = ws_connect_recv_buffer(&server, 4096).await;
    slow.join("feed.news").await;
    reader.recv_type("user_joined").await;
    // `slow` reads nothing until its queue has overflowed.
    let last = flood_until(&server, &mut reader, "feed.news", r#"herald_slow_consumer_drops_total{policy="drop"}"#, 1.0, 0).await;
    let metrics = Snapshot::take(&server).await;
    assert_eq!(metrics.get(r#"herald_connections_dropped_total{reason="slow_consumer"}"#), 0.0, "{}", metrics.0);
    assert_eq!(metrics.get(r#"herald_slow_consumer_drops_total{policy="disconnect"}"#), 0.0);
    assert!(metrics.get("herald_connections_queue_depth_max") <= 8.0, "the queue stays within its bound");

    // It reads again: still connected, it has what fitted, and the next
    // message shows the jump.
    let mut seqs = read_until_silent(&mut slow, "feed.news").await;
    let got = *seqs.last().expect("what fitted");
    assert_eq!(seqs, (1..=got).collect::<Vec<_>>());
    assert!(got < last, "the last messages did not fit");
    let next = publish_api(&server, "feed.news", json!("next")).await;
    assert_eq!(reader.recv_type("message").await["seq"], next);
    seqs.extend(read_through(&mut slow, "feed.news", next).await);
    assert_eq!(&seqs[seqs.len() - 2..], [got, next], "the jump");
    let dropped = Snapshot::take(&server).await.get(r#"herald_slow_consumer_drops_total{policy="drop"}"#);
    assert_eq!(dropped as u64, last - got, "every skipped frame is counted");

    // What the README shows a client doing: join again with `since`.
    let joined = join_since(&mut slow, "feed.news", got, &epoch).await;
    assert_eq!((joined["recovered"].clone(), joined["seq"].clone()), (json!(true), json!(next)), "{joined}");
    assert_eq!(read_through(&mut slow, "feed.news", next).await, (got + 1..=next).collect::<Vec<_>>());
    let live = publish_api(&server, "feed.news", json!("live")).await;
    assert_eq!(read_through(&mut slow, "feed.news", live).await, [live]);
    assert_eq!(reader.recv_type("message").await["seq"], live);
}

/// Reads `client`'s `message` frames of `room` until nothing arrives for
/// 300 ms: their `seq`s. Anything else (a close above all) fails the test.
async fn read_until_silent(client: &mut Client, room: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        match client.next_event_within(Duration::from_millis(300)).await {
            Some(Event::Frame(frame)) if frame["type"] == "message" && frame["room"] == room => {
                seqs.push(frame["seq"].as_u64().unwrap());
            }
            None => return seqs,
            other => panic!("expected messages, got {other:?} after {seqs:?}"),
        }
    }
}

/// Messages missing after the first of `seqs`.
fn count_gaps(seqs: &[u64]) -> u64 {
    seqs.windows(2).map(|w| w[1] - w[0] - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_reader_stays_connected_and_ends_on_the_newest_message() {
    let server = slow_server(SlowConsumer::Latest);
    let mut reader = ws_connect_as(&server, "reader").await;
    reader.join("feed.price").await;
    let mut slow = ws_connect_recv_buffer(&server, 4096).await;
    slow.join("feed.price").await;
    reader.recv_type("user_joined").await;
    // Until the slot has been replaced a few times, then some more.
    let last =
        flood_until(&server, &mut reader, "feed.price", "herald_slow_consumer_latest_replaced_total", 3.0, 5).await;
    let metrics = Snapshot::take(&server).await;
    assert_eq!(metrics.get(r#"herald_connections_dropped_total{reason="slow_consumer"}"#), 0.0, "{}", metrics.0);
    assert!(metrics.get(r#"herald_slow_consumer_drops_total{policy="latest"}"#) >= 8.0, "{}", metrics.0);
    assert!(metrics.get("herald_connections_queue_depth_max") <= 8.0, "the slot is outside the queue");

    // It reads again: everything queued, then the newest message, last.
    let seqs = read_through(&mut slow, "feed.price", last).await;
    assert!(count_gaps(&seqs) >= 8, "older messages were dropped: {seqs:?}");
    slow.expect_silence(Duration::from_millis(300)).await;
    let live = publish_api(&server, "feed.price", json!("live")).await;
    assert_eq!(read_through(&mut slow, "feed.price", live).await, [live]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_disconnect_room_s_frame_closes_a_connection_for_being_slow() {
    let server = slow_server(SlowConsumer::Drop);
    let mut reader = ws_connect_as(&server, "reader").await;
    reader.join("feed.news").await;
    reader.join("chat").await;
    let mut slow = ws_connect_recv_buffer(&server, 4096).await;
    slow.join("feed.news").await;
    slow.join("chat").await;
    let slow_user = reader.recv_type("user_joined").await["user"].as_str().unwrap().to_owned();
    reader.recv_type("user_joined").await;
    // A full queue under `drop` keeps the connection.
    flood_until(&server, &mut reader, "feed.news", r#"herald_slow_consumer_drops_total{policy="drop"}"#, 1.0, 0).await;
    assert_eq!(Snapshot::take(&server).await.get(r#"herald_connections_dropped_total{reason="slow_consumer"}"#), 0.0);
    // One frame of a `disconnect` room that does not fit closes it.
    publish_api(&server, "chat", json!("one too many")).await;
    assert_eq!(reader.recv_type("message").await["room"], "chat");
    let mut rooms_left = Vec::new();
    for _ in 0..2 {
        let gone = reader.recv_type("user_left").await;
        assert_eq!(gone["user"].as_str(), Some(slow_user.as_str()), "{gone}");
        rooms_left.push(gone["room"].as_str().unwrap().to_owned());
    }
    rooms_left.sort();
    assert_eq!(rooms_left, ["chat", "feed.news"], "it left every room");
    let closed = || async {
        let metrics = Snapshot::take(&server).await;
        metrics.get(r#"herald_connections_dropped_total{reason="slow_consumer"}"#) == 1.0
            && metrics.get(r#"herald_slow_consumer_drops_total{policy="disconnect"}"#) >= 1.0
    };
    assert!(eventually(WAIT, closed).await, "{}", Snapshot::take(&server).await.0);
    let end = loop {
        match slow.next_event_within(Duration::from_secs(10)).await {
            Some(Event::Frame(_)) => {}
            Some(Event::Closed(close)) => break close,
            None => panic!("the slow connection is still open"),
        }
    };
    assert!(matches!(end, None | Some((4008, _))), "closed with {end:?}");
}
