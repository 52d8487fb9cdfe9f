//! Supervision, proven by breaking things on purpose: faults injected through
//! `POST /api/debug/crash` while real clients are connected and publishing,
//! then checks that members, `seq`, presence and every other connection
//! carried on, and that the restart counters moved.

use crate::support::*;

use std::time::{Duration, Instant};

use herald::Config;
use serde_json::{json, Value};

const KEY: &str = "drill-key";

fn drill_config() -> Config {
    let mut config = config();
    config.api.key = KEY.into();
    config.debug.fault_injection = true;
    config
}

async fn call(server: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    api(server.addr, method, path, Some(KEY), &body.to_string()).await
}

async fn crash(server: &TestServer, body: Value) {
    let (status, reply) = call(server, "POST", "/api/debug/crash", body.clone()).await;
    assert_eq!(status, 200, "crash {body}: {reply}");
}

async fn counter(server: &TestServer, series: &str) -> f64 {
    Snapshot::take(server).await.value(series).unwrap_or(0.0)
}

fn restarts(actor: &str) -> String {
    format!("herald_actor_restarts_total{{actor=\"{actor}\"}}")
}

fn failures(actor: &str) -> String {
    format!("herald_actor_failures_total{{actor=\"{actor}\"}}")
}

async fn wait_for(server: &TestServer, series: &str, value: f64) {
    assert!(
        eventually(WAIT, || async { counter(server, series).await == value }).await,
        "{series} never reached {value} (now {})",
        counter(server, series).await
    );
}

async fn users_in(server: &TestServer, room: &str) -> Vec<String> {
    let (status, reply) = call(server, "GET", &format!("/api/rooms/{room}/presence"), Value::Null).await;
    assert_eq!(status, 200, "{reply}");
    let mut users: Vec<String> = reply["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().into()).collect();
    users.sort();
    users
}

async fn online(server: &TestServer, user: &str) -> bool {
    let (status, reply) = call(server, "GET", &format!("/api/users/{user}/status"), Value::Null).await;
    assert_eq!(status, 200, "{reply}");
    reply["online"].as_bool().unwrap()
}

/// Publishes `n` messages from `client` into `room`, each acknowledged, and
/// returns their `seq`s.
async fn publish_acked(client: &mut Client, room: &str, n: usize, tag: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        client.send(json!({"type": "publish", "room": room, "data": {"tag": tag, "i": i}, "echo": false, "id": id})).await;
        let ack = client.recv_type("ack").await;
        assert_eq!(ack["id"], id.as_str(), "{ack}");
        seqs.push(ack["seq"].as_u64().unwrap());
    }
    seqs
}

/// Reads the `message` frames of `client` until it has `n`, failing on any
/// presence change (`user_joined` / `user_left`) among them.
async fn messages(client: &mut Client, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("message") => seqs.push(frame["seq"].as_u64().unwrap()),
            Some("user_joined" | "user_left") => panic!("spurious presence change: {frame}"),
            _ => {}
        }
    }
    seqs
}

fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] > w[0])
}

#[tokio::test]
async fn without_fault_injection_the_crash_route_does_not_exist() {
    let mut config = drill_config();
    config.debug.fault_injection = false;
    let server = start(config);
    let (status, reply) = call(&server, "POST", "/api/debug/crash", json!({"target": "presence"})).await;
    assert_eq!((status, reply["error"].as_str()), (404, Some("no such API route")));
    // With it on, a key is still required and bodies are checked.
    let server = start(drill_config());
    let (status, _) = api(server.addr, "POST", "/api/debug/crash", None, r#"{"target":"presence"}"#).await;
    assert_eq!(status, 401);
    for (body, expected) in [
        (json!({"target": "everything"}), 400),
        (json!({}), 400),
        (json!({"target": "room"}), 400),
        (json!({"target": "room", "room": "nobody-here"}), 404),
        (json!({"target": "connection", "conn": "test-999999"}), 404),
        (json!({"target": "connection", "conn": true}), 400),
    ] {
        let (status, reply) = call(&server, "POST", "/api/debug/crash", body.clone()).await;
        assert_eq!(status, expected, "{body}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
}

#[tokio::test]
async fn a_room_that_panics_keeps_its_members_seq_and_presence() {
    let server = start(drill_config());
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    let mut other = ws_connect_as(&server, "carol").await;
    alice.join("stable").await;
    bob.join("stable").await;
    other.join("elsewhere").await;
    let mut sse = sse_open(&server, &format!("rooms=stable&token={}", token("dave", json!({})))).await;
    assert_eq!(sse.status, 200);
    // The join notices come first; drain them.
    while alice.recv_type("user_joined").await["user"] != "dave" {}
    assert_eq!(bob.recv_type("user_joined").await["user"], "dave");

    let before = publish_acked(&mut alice, "stable", 3, "before").await;
    assert_eq!(before, [1, 2, 3]);
    crash(&server, json!({"target": "room", "room": "stable"})).await;
    wait_for(&server, &restarts("room"), 1.0).await;
    assert_eq!(counter(&server, &failures("room")).await, 1.0);

    let mut after = publish_acked(&mut alice, "stable", 3, "after").await;
    let (status, reply) = call(&server, "POST", "/api/publish", json!({"room": "stable", "data": "from the backend"})).await;
    assert_eq!(status, 200, "{reply}");
    after.push(reply["seq"].as_u64().unwrap());
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert!(strictly_increasing(&all), "seq reused or reset: {all:?}");
    assert_eq!(after[0], 4, "seq carries on from before the crash: {all:?}");

    // Every member still gets everything; nobody saw anyone leave or join.
    assert_eq!(messages(&mut bob, 7).await, all);
    let mut sse_seqs = Vec::new();
    while sse_seqs.len() < 7 {
        sse_seqs.push(sse.next_data().await["seq"].as_u64().unwrap());
    }
    assert_eq!(sse_seqs, all);
    assert_eq!(messages(&mut alice, 1).await, [after[3]], "alice gets the backend's message");

    assert_eq!(users_in(&server, "stable").await, ["alice", "bob", "dave"]);
    // The other room, and its member, never noticed.
    assert_eq!(other.request(json!({"type": "ping", "id": 1})).await["type"], "pong");
    other.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn presence_that_panics_answers_exactly_again_within_a_second() {
    let server = start(drill_config());
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    alice.join("hall").await;
    bob.join("hall").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");
    let _sse = sse_open(&server, &format!("rooms=hall&token={}", token("carol", json!({})))).await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "carol");
    assert_eq!(bob.recv_type("user_joined").await["user"], "carol");

    crash(&server, json!({"target": "presence"})).await;
    let crashed = Instant::now();
    let exact = || async {
        users_in(&server, "hall").await == ["alice", "bob", "carol"]
            && online(&server, "alice").await
            && online(&server, "carol").await
            && !online(&server, "nobody").await
    };
    assert!(eventually(Duration::from_secs(1), exact).await, "presence not exact within 1 s of the crash");
    println!("presence answered exactly {:?} after the crash", crashed.elapsed());
    wait_for(&server, &restarts("presence"), 1.0).await;
    assert_eq!(counter(&server, &failures("presence")).await, 1.0);
    let (_, stats) = call(&server, "GET", "/api/stats", Value::Null).await;
    assert_eq!((stats["connections"].as_u64(), stats["users"].as_u64()), (Some(3), Some(3)), "{stats}");

    // Presence carries on: queries over WebSocket, direct messages, and a
    // real departure is reported once.
    let reply = alice.request(json!({"type": "status", "users": ["bob", "carol"], "id": "s"})).await;
    assert_eq!(reply["online"], json!({"bob": true, "carol": true}), "{reply}");
    bob.send(json!({"type": "direct", "to": "alice", "data": "still there?"})).await;
    assert_eq!(alice.recv_type("direct").await["data"], "still there?");
    bob.close().await;
    let left = alice.recv().await;
    assert_eq!((left["type"].as_str(), left["user"].as_str()), (Some("user_left"), Some("bob")), "{left}");
    assert!(eventually(WAIT, || async { !online(&server, "bob").await }).await);
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_registry_shard_that_panics_restarts_with_its_rooms() {
    let server = start(drill_config());
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");
    let before = publish_acked(&mut alice, "lobby", 2, "before").await;

    crash(&server, json!({"target": "registry", "room": "lobby"})).await;
    wait_for(&server, &restarts("registry"), 1.0).await;
    assert_eq!(counter(&server, &failures("registry")).await, 1.0);

    let after = publish_acked(&mut alice, "lobby", 2, "after").await;
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();
    assert_eq!(all, [1, 2, 3, 4], "seq carries on across the shard restart");
    assert_eq!(messages(&mut bob, 4).await, all);
    assert_eq!(users_in(&server, "lobby").await, ["alice", "bob"]);

    // The restarted shard serves joins and leaves.
    let mut carol = ws_connect_as(&server, "carol").await;
    let joined = carol.join("lobby").await;
    assert_eq!(joined["users"], json!(["alice", "bob", "carol"]), "{joined}");
    assert_eq!(alice.recv_type("user_joined").await["user"], "carol");
    bob.send(json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(alice.recv_type("user_left").await["user"], "bob");
    assert_eq!(users_in(&server, "lobby").await, ["alice", "carol"]);
}

#[tokio::test]
async fn a_connection_that_panics_closes_alone_with_1011() {
    let server = start(drill_config());
    let mut doomed = ws_connect_raw(&format!("{}?token={}", server.ws_url(), token("doomed", json!({}))), &[]).await;
    let welcome = doomed.recv().await;
    let conn = welcome["conn"].as_str().expect("conn id").to_owned();
    let mut alice = ws_connect_as(&server, "alice").await;
    doomed.join("room").await;
    alice.join("room").await;
    let _ = doomed.recv_type("user_joined").await;

    // The crash is answered once the connection is gone, which is when its
    // client hangs up after reading the close (or, from a client that never
    // does, after the close grace): the client reads and hangs up meanwhile.
    let hang_up = async move {
        let close = doomed.expect_close().await;
        drop(doomed);
        close
    };
    let ((), (code, reason)) = tokio::join!(crash(&server, json!({"target": "connection", "conn": conn})), hang_up);
    assert_eq!((code, reason.as_str()), (1011, "internal error"));
    assert_eq!(alice.recv_type("user_left").await["user"], "doomed");
    assert_eq!(users_in(&server, "room").await, ["alice"]);
    assert!(!online(&server, "doomed").await);
    assert_eq!(counter(&server, &failures("connection")).await, 1.0);
    // Everyone else carries on.
    assert_eq!(publish_acked(&mut alice, "room", 1, "after").await.len(), 1);
    assert_eq!(alice.request(json!({"type": "ping", "id": 2})).await["type"], "pong");
}

#[tokio::test]
async fn rooms_failing_past_the_limit_escalate_to_a_shard_restart() {
    let mut config = drill_config();
    config.supervision.max_restarts = 2;
    config.supervision.window_ms = 60_000;
    let server = start(config);
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    alice.join("fragile").await;
    bob.join("fragile").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");

    for n in 1..=2 {
        crash(&server, json!({"target": "room", "room": "fragile"})).await;
        wait_for(&server, &restarts("room"), n as f64).await;
    }
    assert_eq!(counter(&server, &restarts("registry")).await, 0.0);
    // A third failure within the window is one too many for the shard: it
    // fails, and the root restarts it with its rooms.
    crash(&server, json!({"target": "room", "room": "fragile"})).await;
    wait_for(&server, &restarts("registry"), 1.0).await;
    assert_eq!(counter(&server, &failures("room")).await, 3.0);
    assert_eq!(counter(&server, &failures("registry")).await, 1.0);
    assert_eq!(counter(&server, &restarts("room")).await, 2.0);

    let seqs = publish_acked(&mut alice, "fragile", 3, "after").await;
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(messages(&mut bob, 3).await, seqs);
    assert_eq!(users_in(&server, "fragile").await, ["alice", "bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_keep_receiving_while_faults_land_mid_stream() {
    let server = start(drill_config());
    let mut publisher = ws_connect_as(&server, "publisher").await;
    let mut reader = ws_connect_as(&server, "reader").await;
    publisher.join("busy").await;
    reader.join("busy").await;
    let _ = publisher.recv_type("user_joined").await;

    // Publishes acknowledged around faults in the room, the shard and
    // presence: every acknowledged message reaches the reader, in order.
    let mut acked = Vec::new();
    for (round, fault) in [json!({"target": "room", "room": "busy"}), json!({"target": "registry", "room": "busy"}), json!({"target": "presence"})]
        .into_iter()
        .enumerate()
    {
        acked.extend(publish_acked(&mut publisher, "busy", 20, &format!("r{round}")).await);
        crash(&server, fault).await;
        acked.extend(publish_acked(&mut publisher, "busy", 20, &format!("r{round}-after")).await);
    }
    assert!(strictly_increasing(&acked), "{acked:?}");
    let received = messages(&mut reader, acked.len()).await;
    assert_eq!(received, acked);
    assert_eq!(users_in(&server, "busy").await, ["publisher", "reader"]);
}

#[tokio::test]
async fn a_join_answered_internal_leaves_no_membership_behind_when_it_lands_late() {
    let server = start(drill_config());
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("slow").await;
    let (status, reply) = call(&server, "POST", "/api/debug/stall", json!({"room": "slow"})).await;
    assert_eq!((status, &reply), (200, &json!({"stalled": "slow"})));

    let mut bob = ws_connect_as(&server, "bob").await;
    bob.send(json!({"type": "join", "room": "slow", "id": "j"})).await;
    // Answered once the connection stops waiting, a call's deadline (5 s)
    // after the join: longer than a test's usual wait.
    let reply = match bob.next_event_within(Duration::from_secs(10)).await {
        Some(Event::Frame(frame)) => frame,
        other => panic!("the join is answered: {other:?}"),
    };
    assert_eq!((&reply["code"], &reply["id"]), (&json!("INTERNAL"), &json!("j")), "the join went unanswered: {reply}");

    // The stall ends and the join lands: bob, told to try again, must not be
    // in the room. Presence is asked of the room, after the join and leave.
    let settled = eventually(Duration::from_secs(5), || async {
        let (_, body) = call(&server, "GET", "/api/rooms/slow/presence", json!(null)).await;
        body["users"] == json!(["alice"])
    })
    .await;
    assert!(settled, "bob is not left in the room his join was refused from");
    let reply = bob.request(json!({"type": "publish", "room": "slow", "data": 1, "id": "p"})).await;
    assert_eq!(reply["code"], "NOT_IN_ROOM", "{reply}");
    // Trying again works.
    let joined = bob.join("slow").await;
    assert_eq!(joined["users"], json!(["alice", "bob"]));
}
