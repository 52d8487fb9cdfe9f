//! History and recovery on one node, over real sockets: `joined` with
//! `seq` and `epoch`, `join` with `since` after a disconnect while others
//! publish (by WebSocket and by the API), what cannot be recovered (a gap
//! older than the history, another epoch, a restarted server, an expired
//! or evicted history), the history API, and SSE streams that resume from
//! `Last-Event-ID` as a browser's `EventSource` does.

use crate::support::*;

use std::time::Duration;

use herald::Config;
use serde_json::{json, Value};

const KEY: &str = "history-test-key";

fn history_server(edit: impl FnOnce(&mut Config)) -> TestServer {
    server_with(|config| {
        config.api.key = KEY.into();
        edit(config);
    })
}

async fn publish_api(server: &TestServer, room: &str, data: Value) -> u64 {
    publish_via_api(server.addr, KEY, room, data).await
}

async fn history(server: &TestServer, room: &str, query: &str) -> (u16, Value) {
    api(server.addr, "GET", &format!("/api/rooms/{room}/history{query}"), Some(KEY), "").await
}

/// Publishes `data` to `room` and returns the `message` the publisher gets back.
async fn publish_ws(client: &mut Client, room: &str, data: Value) -> Value {
    client.send(json!({"type": "publish", "room": room, "data": data})).await;
    next_in(client, room).await
}

/// The next `message` of `room`.
async fn next_in(client: &mut Client, room: &str) -> Value {
    loop {
        let frame = client.recv_type("message").await;
        if frame["room"] == room {
            return frame;
        }
    }
}

/// Sends a `join` with `since` (and `epoch`) and returns the `joined`.
async fn join_since(client: &mut Client, room: &str, since: u64, epoch: Option<&str>) -> Value {
    let mut frame = json!({"type": "join", "room": room, "since": since});
    if let Some(epoch) = epoch {
        frame["epoch"] = json!(epoch);
    }
    client.send(frame).await;
    let joined = client.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_was_published_meanwhile_then_live() {
    let server = history_server(|_| {});
    let mut bob = ws_connect_as(&server, "bob").await;
    let first = bob.join("lobby").await;
    assert_eq!((first["seq"].as_u64(), first["count"].as_u64()), (Some(0), Some(1)), "{first}");
    assert!(first["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{first}");
    assert!(first.get("recovered").is_none(), "no recovered field without since: {first}");
    let epoch = first["epoch"].as_str().unwrap().to_owned();

    let mut alice = ws_connect_as(&server, "alice").await;
    let joined = alice.join("lobby").await;
    assert_eq!((joined["seq"].as_u64(), joined["count"].as_u64()), (Some(0), Some(2)));
    for n in 1..=3 {
        publish_ws(&mut bob, "lobby", json!({"n": n})).await;
        assert_eq!(next_in(&mut alice, "lobby").await["seq"], n);
    }
    alice.close().await;

    // While alice is away: two messages over WebSocket, two through the API.
    let mut missed = Vec::new();
    for n in 4..=5 {
        missed.push(publish_ws(&mut bob, "lobby", json!({"n": n})).await);
    }
    for n in 6..=7 {
        assert_eq!(publish_api(&server, "lobby", json!({"n": n})).await, n);
        missed.push(next_in(&mut bob, "lobby").await);
    }

    let mut alice = ws_connect_as(&server, "alice").await;
    let joined = join_since(&mut alice, "lobby", 3, Some(&epoch)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!((joined["seq"].as_u64(), joined["epoch"].as_str()), (Some(7), Some(epoch.as_str())));
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(next_in(&mut alice, "lobby").await);
    }
    assert_eq!(replayed, missed, "the very frames first delivered, in order");
    publish_ws(&mut bob, "lobby", json!({"n": 8})).await;
    assert_eq!(next_in(&mut alice, "lobby").await["seq"], 8, "then live, nothing twice");
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn recoverable_or_not_exactly_as_the_contract_says() {
    let server = history_server(|config| config.history.size = 5);
    let mut bob = ws_connect_as(&server, "bob").await;
    let epoch = bob.join("r").await["epoch"].as_str().unwrap().to_owned();
    for n in 1..=8 {
        publish_ws(&mut bob, "r", json!(n)).await;
    }
    let mut alice = ws_connect_as(&server, "alice").await;

    // since == latest: recovered, nothing to replay.
    let joined = join_since(&mut alice, "r", 8, Some(&epoch)).await;
    assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(true), Some(8)));
    alice.expect_silence(Duration::from_millis(200)).await;
    alice.send(json!({"type": "leave", "room": "r"})).await;
    alice.recv_type("left").await;

    // The history holds 4..=8: since 3 is whole, since 2 is not.
    let joined = join_since(&mut alice, "r", 3, None).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_in(&mut alice, "r").await);
    }
    assert_eq!(seqs(&got), [4, 5, 6, 7, 8]);
    let cases: [(u64, Option<&str>, &str); 3] =
        [(2, Some(&epoch), "older than the history"), (1, Some("another-epoch"), "another epoch"), (9, None, "beyond latest")];
    for (since, epoch, why) in cases {
        alice.send(json!({"type": "leave", "room": "r"})).await;
        alice.recv_type("left").await;
        let joined = join_since(&mut alice, "r", since, epoch).await;
        assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(false), Some(8)), "{why}: {joined}");
        alice.expect_silence(Duration::from_millis(150)).await;
    }
    // Unrecovered still means live from here.
    publish_ws(&mut bob, "r", json!(9)).await;
    assert_eq!(next_in(&mut alice, "r").await["seq"], 9);
}

#[tokio::test]
async fn joining_again_with_since_replays_without_a_second_user_joined() {
    let server = history_server(|_| {});
    let mut bob = ws_connect_as(&server, "bob").await;
    bob.join("again").await;
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("again").await;
    assert_eq!(bob.recv_type("user_joined").await["user"], "alice");
    for n in 1..=3 {
        publish_ws(&mut bob, "again", json!(n)).await;
        next_in(&mut alice, "again").await;
    }
    let joined = join_since(&mut alice, "again", 1, None).await;
    assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(true), Some(3)));
    assert_eq!(seqs(&[next_in(&mut alice, "again").await, next_in(&mut alice, "again").await]), [2, 3]);
    publish_ws(&mut bob, "again", json!(4)).await;
    assert_eq!(next_in(&mut alice, "again").await["seq"], 4);
    // Bob saw his own messages and nothing else: no second user_joined.
    bob.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn since_and_epoch_of_the_wrong_type_are_bad_requests() {
    let server = history_server(|_| {});
    let mut alice = ws_connect_as(&server, "alice").await;
    for frame in [
        json!({"type": "join", "room": "t", "since": "3", "id": 1}),
        json!({"type": "join", "room": "t", "since": -1, "id": 2}),
        json!({"type": "join", "room": "t", "since": 1.5, "id": 3}),
        json!({"type": "join", "room": "t", "since": 1, "epoch": 7, "id": 4}),
    ] {
        let reply = alice.request(frame.clone()).await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some("BAD_REQUEST")), "{frame}");
        assert_eq!(reply["id"], frame["id"]);
    }
    // since null is no since; epoch without since is ignored.
    let joined = alice.request(json!({"type": "join", "room": "t", "since": null})).await;
    assert_eq!(joined["type"], "joined");
    assert!(joined.get("recovered").is_none(), "{joined}");
    alice.send(json!({"type": "leave", "room": "t"})).await;
    alice.recv_type("left").await;
    let joined = alice.request(json!({"type": "join", "room": "t", "epoch": "x"})).await;
    assert!(joined.get("recovered").is_none(), "{joined}");
}

#[tokio::test]
async fn a_restarted_server_has_a_new_epoch_and_recovers_nothing_across_it() {
    let before = history_server(|_| {});
    let mut alice = ws_connect_as(&before, "alice").await;
    let epoch = alice.join("e").await["epoch"].as_str().unwrap().to_owned();
    publish_ws(&mut alice, "e", json!(1)).await;
    drop(alice);
    drop(before);

    let after = history_server(|_| {});
    let mut alice = ws_connect_as(&after, "alice").await;
    let joined = join_since(&mut alice, "e", 1, Some(&epoch)).await;
    assert_ne!(joined["epoch"].as_str(), Some(epoch.as_str()), "{joined}");
    assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(false), Some(0)));
}

#[tokio::test]
async fn history_expires_ttl_after_the_last_publish_but_numbering_goes_on() {
    let server = history_server(|config| config.history.ttl_ms = 300);
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("brief").await;
    publish_ws(&mut alice, "brief", json!(1)).await;
    let before = Snapshot::take(&server).await;
    let (_, page) = history(&server, "brief", "").await;
    assert_eq!(seqs(page["messages"].as_array().unwrap()), [1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (_, page) = history(&server, "brief", "").await;
    assert_eq!((page["seq"].as_u64(), page["messages"].as_array().map(Vec::len)), (Some(1), Some(0)), "{page}");
    let mut bob = ws_connect_as(&server, "bob").await;
    let joined = join_since(&mut bob, "brief", 0, None).await;
    assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(false), Some(1)));
    let after = Snapshot::take(&server).await;
    assert_moved(
        &before,
        &after,
        &[("herald_history_evictions_total{reason=\"ttl\"}", 1.0), ("herald_history_recoveries_total{recovered=\"false\"}", 1.0)],
    );
    assert_eq!(after.get("herald_history_messages"), 0.0);
    assert_eq!(publish_ws(&mut alice, "brief", json!(2)).await["seq"], 2);
}

#[tokio::test]
async fn an_empty_room_keeps_its_history() {
    let server = history_server(|_| {});
    let mut alice = ws_connect_as(&server, "alice").await;
    let epoch = alice.join("quiet").await["epoch"].as_str().unwrap().to_owned();
    publish_ws(&mut alice, "quiet", json!("kept")).await;
    alice.close().await;
    assert!(eventually(WAIT, || async { Snapshot::take(&server).await.get("herald_rooms_active") == 0.0 }).await);
    let mut alice = ws_connect_as(&server, "alice").await;
    let joined = join_since(&mut alice, "quiet", 0, Some(&epoch)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(next_in(&mut alice, "quiet").await["data"], "kept");
}

#[tokio::test]
async fn the_node_s_history_stays_under_max_bytes_oldest_first() {
    let server = history_server(|config| config.history.max_bytes = 4000);
    let filler = "x".repeat(400);
    for n in 1..=6 {
        publish_api(&server, "old", json!({"n": n, "pad": filler})).await;
    }
    let before = Snapshot::take(&server).await;
    for n in 1..=10 {
        publish_api(&server, "new", json!({"n": n, "pad": filler})).await;
    }
    let after = Snapshot::take(&server).await;
    let held = after.get("herald_history_bytes");
    assert!(held > 0.0 && held <= 4000.0, "history holds {held} bytes");
    let evicted = after.get("herald_history_evictions_total{reason=\"max_bytes\"}")
        - before.value("herald_history_evictions_total{reason=\"max_bytes\"}").unwrap_or(0.0);
    assert!(evicted >= 6.0, "evicted {evicted}");
    // The oldest went first: the old room's messages, the new room's kept.
    let (_, old) = history(&server, "old", "").await;
    let (_, new) = history(&server, "new", "").await;
    let new_seqs = seqs(new["messages"].as_array().unwrap());
    assert_eq!(old["messages"].as_array().map(Vec::len), Some(0), "{old}");
    assert!(new_seqs.ends_with(&[9, 10]) && new_seqs.len() < 10, "{new_seqs:?}");
    assert_eq!(after.get("herald_history_messages") as usize, new_seqs.len());
    assert_eq!(old["seq"], 6, "numbering outlives the history");
    assert_eq!(evicted as usize, 6 + 10 - new_seqs.len());
}

#[tokio::test]
async fn history_size_bounds_each_room() {
    let server = history_server(|config| config.history.size = 3);
    for n in 1..=5 {
        publish_api(&server, "small", json!(n)).await;
    }
    let (_, page) = history(&server, "small", "").await;
    assert_eq!(seqs(page["messages"].as_array().unwrap()), [3, 4, 5]);
    let metrics = Snapshot::take(&server).await;
    assert_eq!(metrics.get("herald_history_evictions_total{reason=\"size\"}"), 2.0);
    assert_eq!(metrics.get("herald_history_messages"), 3.0);
}

#[tokio::test]
async fn the_history_api_pages_forward_and_refuses_bad_parameters() {
    let server = history_server(|_| {});
    let mut alice = ws_connect_as(&server, "alice").await;
    let epoch = alice.join("paged").await["epoch"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for n in 1..=5 {
        sent.push(publish_ws(&mut alice, "paged", json!({"n": n})).await);
    }
    let (status, page) = history(&server, "paged", "").await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"room": "paged", "epoch": epoch, "seq": 5, "messages": sent}));
    let (_, page) = history(&server, "paged", "?since=1&limit=2").await;
    assert_eq!(seqs(page["messages"].as_array().unwrap()), [2, 3]);
    let (_, page) = history(&server, "paged", "?since=3&limit=1000").await;
    assert_eq!(seqs(page["messages"].as_array().unwrap()), [4, 5]);
    let (_, page) = history(&server, "paged", "?since=5").await;
    assert_eq!(page["messages"], json!([]));
    let (status, page) = history(&server, "never-used", "").await;
    assert_eq!(status, 200);
    assert_eq!((page["seq"].as_u64(), page["messages"].clone()), (Some(0), json!([])));
    assert!(page["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    for query in ["?since=-1", "?since=x", "?since=1.5", "?limit=0", "?limit=1001", "?limit=abc"] {
        let (status, body) = history(&server, "paged", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, _) = history(&server, "bad%20room", "").await;
    assert_eq!(status, 400);
    let (status, _) = api(server.addr, "GET", "/api/rooms/paged/history", None, "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn recoveries_and_replays_are_counted() {
    let server = history_server(|_| {});
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("counted").await;
    for n in 1..=4 {
        publish_ws(&mut alice, "counted", json!(n)).await;
    }
    let before = Snapshot::take(&server).await;
    let mut bob = ws_connect_as(&server, "bob").await;
    join_since(&mut bob, "counted", 1, None).await;
    for _ in 0..3 {
        next_in(&mut bob, "counted").await;
    }
    let after = Snapshot::take(&server).await;
    assert_moved(
        &before,
        &after,
        &[("herald_history_recoveries_total{recovered=\"true\"}", 1.0), ("herald_history_replayed_total", 3.0)],
    );
}

/// Opens `/sse?rooms=` as `user`, resuming from `last_event_id` as an
/// `EventSource` does when it reconnects.
async fn sse_resume(server: &TestServer, user: &str, rooms: &str, last_event_id: Option<&str>) -> SseClient {
    let bearer = format!("Bearer {}", token(user, json!({})));
    let mut headers = vec![("Authorization", bearer.as_str())];
    if let Some(id) = last_event_id {
        headers.push(("Last-Event-ID", id));
    }
    let client = SseClient::open(server.addr, &format!("/sse?rooms={rooms}"), SseOpen { headers: &headers, ..Default::default() }).await;
    assert_eq!(client.status, 200);
    client
}

/// The room and seq of the next `n` events.
async fn positions(client: &mut SseClient, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let event = client.next_data().await;
        assert_eq!(event["type"], "message", "{event}");
        got.push((event["room"].as_str().unwrap().to_owned(), event["seq"].as_u64().unwrap()));
    }
    got
}

fn of(room: &str, seqs: &[u64]) -> Vec<(String, u64)> {
    seqs.iter().map(|&s| (room.to_owned(), s)).collect()
}

#[tokio::test]
async fn an_sse_stream_resumes_every_room_from_last_event_id() {
    let server = history_server(|_| {});
    let mut stream = sse_resume(&server, "alice", "a,b", None).await;
    for (room, n) in [("a", 1), ("b", 1), ("a", 2)] {
        publish_api(&server, room, json!(n)).await;
    }
    let got = positions(&mut stream, 3).await;
    assert_eq!(got, [("a".to_owned(), 1), ("b".to_owned(), 1), ("a".to_owned(), 2)]);
    let last = stream.last_event_id.clone().expect("message events carry an id");
    drop(stream);

    for (room, n) in [("a", 3), ("b", 2), ("a", 4)] {
        publish_api(&server, room, json!(n)).await;
    }
    let mut stream = sse_resume(&server, "alice", "a,b", Some(&last)).await;
    let mut got = positions(&mut stream, 3).await;
    got.sort();
    assert_eq!(got, [of("a", &[3, 4]), of("b", &[2])].concat(), "missed messages once each");
    publish_api(&server, "b", json!(3)).await;
    assert_eq!(positions(&mut stream, 1).await, of("b", &[3]), "then live");
    assert!(stream.next_within(Duration::from_millis(200)).await.is_none_or(|item| matches!(item, SseItem::Comment(_))));

    // The id after a resumption is as good as the first.
    let last = stream.last_event_id.clone().unwrap();
    drop(stream);
    publish_api(&server, "a", json!(5)).await;
    let mut stream = sse_resume(&server, "alice", "a,b", Some(&last)).await;
    assert_eq!(positions(&mut stream, 1).await, of("a", &[5]));
}

#[tokio::test]
async fn an_sse_stream_that_got_nothing_yet_still_resumes_from_where_it_started() {
    let server = history_server(|_| {});
    publish_api(&server, "calm", json!(1)).await;
    let mut stream = sse_resume(&server, "alice", "calm", None).await;
    // No message yet: the stream's first event sets the id all the same.
    while let Some(SseItem::Comment(_)) = stream.next_within(Duration::from_millis(300)).await {}
    let last = stream.last_event_id.clone().expect("an id as the stream opens");
    drop(stream);
    publish_api(&server, "calm", json!(2)).await;
    let mut stream = sse_resume(&server, "alice", "calm", Some(&last)).await;
    assert_eq!(positions(&mut stream, 1).await, of("calm", &[2]));
}

#[tokio::test]
async fn an_sse_room_that_cannot_be_recovered_says_so_and_unreadable_ids_start_live() {
    let server = history_server(|config| config.history.size = 2);
    let mut stream = sse_resume(&server, "alice", "x,y", None).await;
    publish_api(&server, "x", json!(1)).await;
    publish_api(&server, "y", json!(1)).await;
    positions(&mut stream, 2).await;
    let last = stream.last_event_id.clone().unwrap();
    drop(stream);
    for n in 2..=5 {
        publish_api(&server, "x", json!(n)).await;
    }
    publish_api(&server, "y", json!(2)).await;

    // x lost 2 of its messages from the history; y is whole; z is new.
    let mut stream = sse_resume(&server, "alice", "x,y,z", Some(&last)).await;
    let mut events = Vec::new();
    for _ in 0..2 {
        events.push(stream.next_data().await);
    }
    let unrecovered = events.iter().find(|e| e["type"] == "joined").expect("the joined event of x");
    assert_eq!(unrecovered["room"], "x");
    assert_eq!((unrecovered["recovered"].as_bool(), unrecovered["seq"].as_u64()), (Some(false), Some(5)));
    assert!(unrecovered["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let replayed = events.iter().find(|e| e["type"] == "message").expect("y's missed message");
    assert_eq!((replayed["room"].as_str(), replayed["seq"].as_u64()), (Some("y"), Some(2)));
    publish_api(&server, "z", json!(1)).await;
    publish_api(&server, "x", json!(6)).await;
    assert_eq!(positions(&mut stream, 2).await, [("z".to_owned(), 1), ("x".to_owned(), 6)]);
    drop(stream);

    // An id it cannot read: live, nothing replayed, no joined event.
    for bad in ["garbage", "x,1", "x,e,notanumber", "bad room,e,1"] {
        let mut stream = sse_resume(&server, "alice", "x", Some(bad)).await;
        publish_api(&server, "x", json!("live")).await;
        let event = stream.next_data().await;
        assert_eq!((event["type"].as_str(), event["data"].as_str()), (Some("message"), Some("live")), "{bad}: {event}");
    }
}
