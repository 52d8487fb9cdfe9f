//! Nodes and Redis going away, what a node subscribes to, cluster metrics, the supervised link, and a single node that never touches Redis.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_leave_within_the_ttl() {
    let redis = RedisServer::start();
    let (mut a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut bob = b.client("bob").await;
    bob.join("hall").await;
    let mut alice = a.client("alice").await;
    alice.join("hall").await;
    assert_eq!(bob.recv_type("user_joined").await["user"], "alice");

    let killed = Instant::now();
    a.kill();
    let left = tokio::time::timeout(Duration::from_millis(TTL_MS + 2000), bob.recv_type("user_left"))
        .await
        .expect("user_left within node_ttl_ms + 2 s");
    assert_eq!(left["user"], "alice");
    assert!(killed.elapsed() <= Duration::from_millis(TTL_MS + 2000));
    let (_, body) = b.api("GET", "/api/rooms/hall/presence", json!(null)).await;
    assert_eq!(body["users"], json!(["bob"]));
    let (_, body) = b.api("GET", "/api/users/alice/status", json!(null)).await;
    assert_eq!(body["online"], false);
    let metrics = b.metrics().await;
    assert_eq!(metrics.value("herald_cluster_nodes_alive"), Some(1.0), "{}", metrics.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_rooms_working_and_relaying_comes_back() {
    let mut redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut dave = a.client("dave").await;
    let mut bob = b.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut dave, &mut bob], "r").await;
    until_relayed(&mut alice, &mut [&mut dave, &mut bob], "r").await;
    let errors_before = a.metrics().await.value("herald_cluster_relay_errors_total").unwrap();

    redis.stop();
    assert!(eventually(WAIT, || async { http_get(a.addr, "/readyz").await.0 == 503 }).await, "/readyz turns 503");
    assert_eq!(a.metrics().await.value("herald_cluster_redis_connected"), Some(0.0));
    // Local clients keep working: a's room still delivers between a's clients.
    let mut last_seq = 0;
    for n in 0..20 {
        alice.send(json!({"type": "publish", "room": "r", "data": n, "id": n})).await;
        let ack = alice.recv_type("ack").await;
        let message = next_message(&mut dave, "r").await;
        assert_eq!((&message["data"], &message["seq"]), (&json!(n), &ack["seq"]));
        let seq = message["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq strictly increasing through the outage");
        last_seq = seq;
    }
    let presence = dave.request(json!({"type": "presence", "room": "r"})).await;
    assert_eq!(presence["type"], "presence", "presence still answers: {presence}");
    let errors_during = a.metrics().await.value("herald_cluster_relay_errors_total").unwrap();
    assert!(errors_during > errors_before, "the error counter moved: {errors_before} -> {errors_during}");

    redis.restart();
    assert!(eventually(Duration::from_secs(15), || async { http_get(a.addr, "/readyz").await.0 == 200 }).await);
    assert!(eventually(Duration::from_secs(15), || async { http_get(b.addr, "/readyz").await.0 == 200 }).await);
    // Relaying resumes, with no restart: publish until bob on b gets one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let resumed = loop {
        assert!(Instant::now() < deadline, "relaying never resumed");
        alice.send(json!({"type": "publish", "room": "r", "data": "again"})).await;
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(300), next_message(&mut bob, "r")).await {
            break message;
        }
    };
    assert_eq!(resumed["data"], "again");
    let mut dave_seq = last_seq;
    while let Some(Event::Frame(frame)) = dave.next_event_within(Duration::from_millis(300)).await {
        if frame["type"] == "message" {
            let seq = frame["seq"].as_u64().unwrap();
            assert!(seq > dave_seq, "dave's seq strictly increasing after the outage: {dave_seq} then {seq}");
            dave_seq = seq;
        }
    }
    // Presence is restored in the new Redis: both nodes' users, from either node.
    for node in [&a, &b] {
        let ok = eventually(WAIT, || async {
            node.api("GET", "/api/rooms/r/presence", json!(null)).await.1["users"] == json!(["alice", "bob", "dave"])
        })
        .await;
        assert!(ok, "presence restored, asked on {}", node.addr);
    }
    let (_, body) = b.api("GET", "/api/users/alice/status", json!(null)).await;
    assert_eq!(body["online"], true);
}

/// Has Redis drop every subscriber connection (they reconnect at once).
fn kill_subscribers(redis: &RedisServer) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    stream.write_all(b"*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).unwrap();
    assert!(reply[..n].starts_with(b":"), "CLIENT KILL answered {:?}", String::from_utf8_lossy(&reply[..n]));
}

/// How many subscribers Redis counts on `channel`.
fn subscribers(redis: &RedisServer, channel: &str) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let command = format!("*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n", channel.len());
    stream.write_all(command.as_bytes()).unwrap();
    let mut reply = vec![0u8; 256];
    let n = stream.read(&mut reply).unwrap();
    // *2 $len channel :count
    let text = String::from_utf8_lossy(&reply[..n]).to_string();
    text.lines().find_map(|l| l.strip_prefix(':')).and_then(|c| c.trim().parse().ok()).expect("a NUMSUB count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_subscribe_to_a_room_only_while_they_have_members_in_it() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let count = |channel: &'static str, n: u64| {
        let redis = &redis;
        async move { eventually(WAIT, || async { subscribers(redis, channel) == n }).await }
    };
    assert!(count("herald:room:t", 0).await);
    let mut alice = a.client("alice").await;
    assert!(count("herald:user:alice", 1).await, "a user's channel while the user is online here");
    alice.join("t").await;
    assert!(count("herald:room:t", 1).await);
    let mut bob = b.client("bob").await;
    bob.join("t").await;
    assert!(count("herald:room:t", 2).await);
    alice.request(json!({"type": "leave", "room": "t"})).await;
    assert!(count("herald:room:t", 1).await, "a has no member left in t");
    bob.close().await;
    assert!(count("herald:room:t", 0).await);
    alice.close().await;
    assert!(count("herald:user:alice", 0).await);
    assert_eq!(subscribers(&redis, "herald:broadcast"), 2, "every node hears broadcasts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_brief_disconnect_missed_is_caught_up() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut bob], "hall").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");
    // a's subscription is cut for a moment, far shorter than any tick,
    // just as bob leaves: a never hears it from the channel.
    kill_subscribers(&redis);
    bob.close().await;
    let left = tokio::time::timeout(Duration::from_secs(5), alice.recv_type("user_left")).await;
    assert_eq!(left.expect("a catches up after reconnecting")["user"], "bob");
    let joined = a.client("carol").await.join("hall").await;
    assert_eq!(joined["users"], json!(["alice", "carol"]), "no ghost of bob on a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_count_relays_nodes_and_latency() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut bob], "m").await;
    until_relayed(&mut alice, &mut [&mut bob], "m").await;
    for n in 0..10 {
        alice.send(json!({"type": "publish", "room": "m", "data": n})).await;
    }
    messages(&mut bob, "m", 10).await;
    // Counted as each publish's answer comes back, just after delivery.
    let relayed_out = || async { a.metrics().await.value(r#"herald_cluster_relayed_total{direction="out"}"#).unwrap() };
    assert!(eventually(WAIT, || async { relayed_out().await >= 10.0 }).await);
    let (at_a, at_b) = (a.metrics().await, b.metrics().await);
    let out = at_a.value(r#"herald_cluster_relayed_total{direction="out"}"#).unwrap();
    let into = at_b.value(r#"herald_cluster_relayed_total{direction="in"}"#).unwrap();
    assert!(out >= 10.0 && into >= 10.0, "out {out}, in {into}");
    assert_eq!(at_a.value("herald_cluster_redis_connected"), Some(1.0));
    assert!(eventually(WAIT, || async { a.metrics().await.value("herald_cluster_nodes_alive") == Some(2.0) }).await);
    let latencies = at_b.value("herald_cluster_relay_latency_seconds_count").unwrap();
    assert!(latencies >= 10.0, "{latencies}");
    assert!(at_b.value("herald_cluster_relay_errors_total").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_link_is_supervised_and_relays_again_after_a_restart() {
    let redis = RedisServer::start();
    let debug = "[debug]\nfault_injection = true\n";
    let (a, b) = tokio::join!(Node::start_with("a", redis.url(), true, debug), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut bob], "s").await;
    until_relayed(&mut bob, &mut [&mut alice], "s").await;

    let (status, body) = a.api("POST", "/api/debug/crash", json!({"target": "cluster"})).await;
    assert_eq!((status, &body["crashed"]), (200, &json!("cluster")), "{body}");
    let metrics = a.metrics().await;
    assert_eq!(metrics.value(r#"herald_actor_restarts_total{actor="cluster"}"#), Some(1.0), "{}", metrics.0);
    // Envelopes for a still arrive and are delivered by the new link.
    bob.send(json!({"type": "publish", "room": "s", "data": "after", "id": 1})).await;
    let seq = bob.recv_type("ack").await["seq"].clone();
    let message = next_message(&mut alice, "s").await;
    assert_eq!((&message["data"], &message["seq"]), (&json!("after"), &seq));
    assert_eq!(http_get(a.addr, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_never_touches_redis() {
    // Something listening where Redis would be, counting who connects.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let node = Node::start("solo", url, false).await;
    let mut alice = node.client("alice").await;
    let mut bob = node.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut bob], "r").await;
    alice.send(json!({"type": "publish", "room": "r", "data": 1, "id": 1})).await;
    assert_eq!(alice.recv_type("ack").await["seq"], 1);
    assert_eq!(next_message(&mut bob, "r").await["seq"], 1);
    bob.send(json!({"type": "direct", "to": "alice", "data": 2})).await;
    assert_eq!(alice.recv_type("direct").await["data"], 2);
    assert_eq!(http_get(node.addr, "/readyz").await.0, 200);
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(accepted.is_err(), "the node connected to the Redis address");
    assert_eq!(node.metrics().await.value("herald_cluster_redis_connected"), Some(0.0));
}
