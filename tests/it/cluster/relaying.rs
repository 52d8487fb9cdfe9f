//! What crosses nodes: room messages with one `seq`, acks, direct and broadcast, presence.

use super::*;

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
    assert_eq!(joined["count"], 2, "and counts them");
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
    assert_eq!(presence["count"], 2);
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

#[tokio::test]
async fn an_auth_refresh_that_narrows_the_claims_is_a_leave_every_node_sees() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    alice.join("chat:1").await;
    bob.join("chat:1").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");

    let narrower = token("alice", json!({"rooms": ["lobby"]}));
    alice.send(json!({"type": "auth", "token": narrower, "id": "narrow"})).await;
    assert_eq!(alice.recv().await, json!({"type": "left", "room": "chat:1"}));
    assert_eq!(alice.recv().await, json!({"type": "authed", "user": "alice", "id": "narrow"}));

    let gone = bob.recv_type("user_left").await;
    assert_eq!((&gone["room"], &gone["user"]), (&json!("chat:1"), &json!("alice")), "the other node sees the leave");
    for node in [&a, &b] {
        let (_, body) = node.api("GET", "/api/rooms/chat:1/presence", json!(null)).await;
        assert_eq!(body["users"], json!(["bob"]), "node {}", node.addr);
    }
    bob.request(json!({"type": "publish", "room": "chat:1", "data": "after", "echo": false, "id": 1})).await;
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn joined_comes_before_every_frame_of_the_room_on_another_node_too() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    alice.join("busy").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let addr = a.addr;
    let publisher = tokio::spawn(async move {
        let body = json!({"room": "busy", "data": "live"}).to_string();
        while !*stopped.borrow() {
            let (status, _) = api(addr, "POST", "/api/publish", Some(API_KEY), &body).await;
            assert_eq!(status, 200);
        }
    });
    for round in 0..10 {
        // A user new to the room: b waits for the directory before `joined`.
        let mut bob = b.client(&format!("bob-{round}")).await;
        bob.send(json!({"type": "join", "room": "busy", "id": round})).await;
        let first = bob.recv().await;
        assert_eq!((&first["type"], &first["id"]), (&json!("joined"), &json!(round)), "round {round}: {first}");
        assert_eq!(bob.recv_type("message").await["room"], "busy");
    }
    stop.send(true).unwrap();
    publisher.await.unwrap();
}

#[tokio::test]
async fn an_sse_stream_whose_join_waits_for_redis_still_starts_with_its_response_head() {
    let redis = RedisServer::start();
    let b = Node::start("b", redis.url(), true).await;
    let mut carol = b.client("carol").await;
    carol.join("busy").await;
    // Redis stalls for a second: the reader's join waits for its directory
    // write while carol sends it a direct, delivered here at once.
    let paused = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "CLIENT", "PAUSE", "1000", "ALL"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&paused.stdout).trim(), "OK");
    let token = token("reader", json!({}));
    let addr = b.addr;
    let open = tokio::spawn(async move {
        SseClient::open(addr, &format!("/sse?rooms=busy&token={token}"), SseOpen::default()).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    carol.send(json!({"type": "direct", "to": "reader", "data": "early"})).await;
    let mut sse = open.await.unwrap();
    assert_eq!(sse.status, 200, "the response head comes first");
    assert_eq!(sse.next_data().await["data"], "early");
}
