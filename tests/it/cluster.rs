//! Clustering end to end: a real `redis-server` on a free port and two or
//! three real `herald` processes relaying through it, with real WebSocket
//! clients on each node.

use crate::support::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const API_KEY: &str = "cluster-test-key";
/// The heartbeat ttl the nodes run with: short, so dead nodes go quickly.
const TTL_MS: u64 = 2000;

/// A `herald` process in a cluster.
struct Node {
    herald: Herald,
    addr: std::net::SocketAddr,
}

impl Node {
    /// Starts node `id` relaying through `redis_url` (or not, when
    /// `cluster` is false); returns once it answers `/healthz` and, in a
    /// cluster, `/readyz`.
    async fn start(id: &str, redis_url: String, cluster: bool) -> Self {
        Self::start_with(id, redis_url, cluster, "").await
    }

    /// [`Self::start`], with `extra` appended to the config file.
    async fn start_with(id: &str, redis_url: String, cluster: bool, extra: &str) -> Self {
        let toml = format!(
            "[server]\nnode_id = \"{id}\"\nworkers = 1\n\
             [auth]\njwt_secret = \"{SECRET}\"\n\
             [limits]\nrate_per_sec = 100000\nrate_burst = 100000\n\
             [api]\nkey = \"{API_KEY}\"\n\
             [cluster]\nenabled = {cluster}\nredis_url = \"{redis_url}\"\nnode_ttl_ms = {TTL_MS}\n{extra}"
        );
        let ready = if cluster { "/readyz" } else { "/healthz" };
        let herald = HeraldCommand::new().config(&toml).ready_at(ready).start().await;
        Node { addr: herald.addr, herald }
    }

    async fn client(&self, user: &str) -> Client {
        ws_connect_as(&self.herald, user).await
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        api(self.addr, method, path, Some(API_KEY), &body.to_string()).await
    }

    async fn metrics(&self) -> Snapshot {
        Snapshot::take(&self.herald).await
    }

    /// SIGKILL: no goodbye to the cluster.
    fn kill(&mut self) {
        self.herald.kill();
    }
}

/// Joins `room` with each client in turn.
async fn join_everywhere(clients: &mut [&mut Client], room: &str) {
    for client in clients.iter_mut() {
        client.join(room).await;
    }
}

/// The next `message` frame in `room`, skipping everything else.
async fn next_message(client: &mut Client, room: &str) -> Value {
    loop {
        let frame = client.recv_type("message").await;
        if frame["room"] == room {
            return frame;
        }
    }
}

/// Reads `n` messages of `room`, asserting `seq` strictly increases.
async fn messages(client: &mut Client, room: &str, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::with_capacity(n);
    while got.len() < n {
        let message = next_message(client, room).await;
        if let Some(last) = got.last() {
            assert!(
                message["seq"].as_u64() > last["seq"].as_u64(),
                "seq went from {} to {}",
                last["seq"],
                message["seq"]
            );
        }
        got.push(message);
    }
    got
}

/// Publishes into `room` from `client` until `receiver` has one, so the
/// nodes' subscriptions are known to be live; drains what it got.
async fn until_relayed(sender: &mut Client, receivers: &mut [&mut Client], room: &str) {
    let deadline = Instant::now() + WAIT;
    'probe: loop {
        assert!(Instant::now() < deadline, "the room never relayed");
        sender.send(json!({"type": "publish", "room": room, "data": "probe"})).await;
        for receiver in receivers.iter_mut() {
            match tokio::time::timeout(Duration::from_millis(300), next_message(receiver, room)).await {
                Ok(_) => {}
                Err(_) => continue 'probe,
            }
        }
        break;
    }
    // Whatever probes are still in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for client in std::iter::once(sender).chain(receivers.iter_mut().map(|c| &mut **c)) {
        while client.next_event_within(Duration::from_millis(50)).await.is_some() {}
    }
}

/// Publishes `count` messages into `chat` as `who`, with ids.
async fn publish_all(client: &mut Client, who: &str, count: usize) {
    for n in 0..count {
        client.send(json!({"type": "publish", "room": "chat", "data": {"who": who, "n": n}, "id": n})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_fan_out_across_nodes_with_one_seq_under_concurrent_publishes() {
    let redis = RedisServer::start();
    let (a, b, c) = tokio::join!(
        Node::start("a", redis.url(), true),
        Node::start("b", redis.url(), true),
        Node::start("c", redis.url(), true)
    );
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    let mut carol = c.client("carol").await;
    join_everywhere(&mut [&mut alice, &mut bob, &mut carol], "chat").await;
    until_relayed(&mut alice, &mut [&mut bob, &mut carol], "chat").await;

    // Three nodes publish at once, with ids; the API publishes on a fourth path.
    const EACH: usize = 40;
    let api_publishes = async {
        let mut seqs = Vec::new();
        for n in 0..10 {
            let (status, body) =
                c.api("POST", "/api/publish", json!({"room": "chat", "data": {"who": "api", "n": n}})).await;
            assert_eq!(status, 200, "{body}");
            seqs.push(body["seq"].as_u64().unwrap());
        }
        seqs
    };
    let ((), (), (), api_seqs) = tokio::join!(
        publish_all(&mut alice, "alice", EACH),
        publish_all(&mut bob, "bob", EACH),
        publish_all(&mut carol, "carol", EACH),
        api_publishes
    );
    assert!(api_seqs.windows(2).all(|w| w[0] < w[1]), "{api_seqs:?}");

    let total = 3 * EACH + 10;
    let mut seen: Vec<BTreeMap<u64, Value>> = Vec::new();
    for client in [&mut alice, &mut bob, &mut carol] {
        let got = messages(client, "chat", total).await;
        seen.push(got.into_iter().map(|m| (m["seq"].as_u64().unwrap(), m["data"].clone())).collect());
    }
    assert_eq!(seen[0], seen[1], "the same message has the same seq on nodes a and b");
    assert_eq!(seen[0], seen[2], "the same message has the same seq on nodes a and c");
    // Each publisher's own messages are numbered in the order it sent them.
    for who in ["alice", "bob", "carol", "api"] {
        let order: Vec<u64> = seen[0].values().filter(|d| d["who"] == who).map(|d| d["n"].as_u64().unwrap()).collect();
        assert_eq!(order.len(), if who == "api" { 10 } else { EACH }, "{who}");
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{who}'s messages out of order: {order:?}");
    }
    for seq in &api_seqs {
        assert_eq!(seen[0][seq]["who"], "api", "/api/publish answered the seq its message carries");
    }
    // Typing reaches the other nodes too (never the typist).
    bob.send(json!({"type": "typing", "room": "chat", "typing": true})).await;
    let typing = alice.recv_type("typing").await;
    assert_eq!((&typing["user"], &typing["typing"]), (&json!("bob"), &json!(true)));
    assert_eq!(carol.recv_type("typing").await["user"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_carry_the_seq_every_node_sees_and_echo_false_is_kept() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    join_everywhere(&mut [&mut alice, &mut bob], "r").await;
    until_relayed(&mut alice, &mut [&mut bob], "r").await;

    alice.send(json!({"type": "publish", "room": "r", "data": 1, "id": "p1"})).await;
    let ack = alice.recv().await;
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!("p1")), "the ack comes before the message: {ack}");
    let seq = ack["seq"].as_u64().unwrap();
    assert_eq!(next_message(&mut alice, "r").await["seq"], seq);
    let at_b = next_message(&mut bob, "r").await;
    assert_eq!((&at_b["seq"], &at_b["from"], &at_b["data"]), (&json!(seq), &json!("alice"), &json!(1)));

    alice.send(json!({"type": "publish", "room": "r", "data": 2, "echo": false, "id": "p2"})).await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(next_message(&mut bob, "r").await["seq"], ack["seq"]);
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_broadcast_reach_every_node_once() {
    let redis = RedisServer::start();
    let (a, b, c) = tokio::join!(
        Node::start("a", redis.url(), true),
        Node::start("b", redis.url(), true),
        Node::start("c", redis.url(), true)
    );
    let mut alice_a = a.client("alice").await;
    let mut alice_b = b.client("alice").await;
    let mut bob = c.client("bob").await;

    // A user's channel is subscribed as it comes online; retry the first
    // direct until both tabs have it, then expect exactly one of each.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "direct never crossed nodes");
        bob.send(json!({"type": "direct", "to": "alice", "data": "hi"})).await;
        let got_a = alice_a.next_event_within(Duration::from_millis(300)).await;
        let got_b = alice_b.next_event_within(Duration::from_millis(300)).await;
        if got_a.is_some() && got_b.is_some() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for tab in [&mut alice_a, &mut alice_b] {
        while tab.next_event_within(Duration::from_millis(50)).await.is_some() {}
    }

    bob.send(json!({"type": "direct", "to": "alice", "data": {"n": 1}, "id": 9})).await;
    assert_eq!(bob.recv().await["type"], "ack");
    for tab in [&mut alice_a, &mut alice_b] {
        let direct = tab.recv().await;
        assert_eq!(
            (&direct["type"], &direct["from"], &direct["data"]),
            (&json!("direct"), &json!("bob"), &json!({"n": 1}))
        );
    }
    let (status, _) = b.api("POST", "/api/direct", json!({"user": "bob", "data": "from the api"})).await;
    assert_eq!(status, 200);
    assert_eq!(bob.recv().await["data"], "from the api");

    let (status, _) = a.api("POST", "/api/broadcast", json!({"data": "all"})).await;
    assert_eq!(status, 200);
    for client in [&mut alice_a, &mut alice_b, &mut bob] {
        let frame = client.recv().await;
        assert_eq!((&frame["type"], &frame["data"]), (&json!("broadcast"), &json!("all")));
    }
    // Exactly once: the origin drops its own echo.
    for client in [&mut alice_a, &mut alice_b, &mut bob] {
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_across_nodes() {
    let redis = RedisServer::start();
    let (a, b, c) = tokio::join!(
        Node::start("a", redis.url(), true),
        Node::start("b", redis.url(), true),
        Node::start("c", redis.url(), true)
    );
    let mut carol = c.client("carol").await;
    carol.join("hall").await;

    let mut alice_a = a.client("alice").await;
    let joined = alice_a.join("hall").await;
    assert_eq!(joined["users"], json!(["alice", "carol"]), "joined lists users on other nodes");
    let arrived = carol.recv_type("user_joined").await;
    assert_eq!(arrived["user"], "alice");

    // A second tab on another node is the same user: no second user_joined.
    let mut alice_b = b.client("alice").await;
    assert_eq!(alice_b.join("hall").await["users"], json!(["alice", "carol"]));
    for node in [&a, &b, &c] {
        let (status, body) = node.api("GET", "/api/rooms/hall/presence", json!(null)).await;
        assert_eq!((status, &body["users"]), (200, &json!(["alice", "carol"])), "node {}", node.addr);
    }
    let presence = carol.request(json!({"type": "presence", "room": "hall"})).await;
    assert_eq!(presence["users"], json!(["alice", "carol"]));
    let status = carol.request(json!({"type": "status", "users": ["alice", "nobody"]})).await;
    assert_eq!(status["online"], json!({"alice": true, "nobody": false}));

    // The tab on a leaves: alice is still in the room through b.
    alice_a.close().await;
    carol.expect_silence(Duration::from_millis(500)).await;
    let (_, body) = c.api("GET", "/api/rooms/hall/presence", json!(null)).await;
    assert_eq!(body["users"], json!(["alice", "carol"]));
    // The last tab leaves: one user_left, everywhere.
    alice_b.close().await;
    let left = carol.recv_type("user_left").await;
    assert_eq!(left["user"], "alice");
    carol.expect_silence(Duration::from_millis(300)).await;
    let (_, body) = a.api("GET", "/api/rooms/hall/presence", json!(null)).await;
    assert_eq!(body["users"], json!(["carol"]));
    let (_, body) = a.api("GET", "/api/users/alice/status", json!(null)).await;
    assert_eq!(body["online"], false);
    let (_, body) = a.api("GET", "/api/users/carol/status", json!(null)).await;
    assert_eq!(body["online"], true, "carol is online on c, asked on a");
}

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
