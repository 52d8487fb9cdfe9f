//! History and recovery across two nodes and a real Redis: a client
//! recovers on the other node, after its node is killed, and gets
//! `recovered: false` (never a wrong replay) once Redis restarted empty; a
//! join right after an acknowledged publish on another node misses nothing.

use super::*;

/// Sends a `join` with `since` (and `epoch`), returns the `joined`.
async fn join_since(client: &mut Client, room: &str, since: u64, epoch: &str) -> Value {
    client.send(json!({"type": "join", "room": room, "since": since, "epoch": epoch})).await;
    let joined = client.recv_type("joined").await;
    assert_eq!(joined["room"], room, "{joined}");
    joined
}

/// Publishes with an id and returns the ack's `seq` and the message as
/// the publisher got it back.
async fn publish_acked(client: &mut Client, room: &str, data: Value) -> (u64, Value) {
    client.send(json!({"type": "publish", "room": room, "data": data, "id": "p"})).await;
    let ack = client.recv_type("ack").await;
    let message = next_message(client, room).await;
    assert_eq!(ack["seq"], message["seq"]);
    (ack["seq"].as_u64().unwrap(), message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_the_other_node_and_after_its_node_is_killed() {
    let redis = RedisServer::start();
    let (mut a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    let joined = alice.join("travel").await;
    let epoch = joined["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(bob.join("travel").await["epoch"], epoch.as_str(), "one epoch per room, whichever node");
    until_relayed(&mut bob, &mut [&mut alice], "travel").await;
    let (seen, _) = publish_acked(&mut bob, "travel", json!("seen")).await;
    assert_eq!(next_message(&mut alice, "travel").await["seq"], seen);
    alice.close().await;

    // Published while alice is away: on b by WebSocket, and on a by the API.
    let mut missed = Vec::new();
    for n in 0..3 {
        missed.push(publish_acked(&mut bob, "travel", json!({"n": n})).await.1);
    }
    let (status, reply) = a.api("POST", "/api/publish", json!({"room": "travel", "data": "from the api"})).await;
    assert_eq!(status, 200, "{reply}");
    missed.push(next_message(&mut bob, "travel").await);
    assert_eq!(missed[3]["seq"], reply["seq"]);

    // Alice comes back on b: every missed message, the very frames, once.
    let mut alice = b.client("alice").await;
    let joined = join_since(&mut alice, "travel", seen, &epoch).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["seq"], missed[3]["seq"]);
    for expected in &missed {
        assert_eq!(&next_message(&mut alice, "travel").await, expected);
    }
    let (live, _) = publish_acked(&mut bob, "travel", json!("live")).await;
    assert_eq!(next_message(&mut alice, "travel").await["seq"], live);
    alice.expect_silence(Duration::from_millis(300)).await;
    alice.close().await;

    // Carol was on a, which dies: its history was never a's to lose.
    let mut carol = a.client("carol").await;
    carol.join("travel").await;
    let (last, _) = publish_acked(&mut carol, "travel", json!("before the crash")).await;
    next_message(&mut bob, "travel").await;
    a.kill();
    let (after, message) = publish_acked(&mut bob, "travel", json!("after the crash")).await;
    let mut carol = b.client("carol").await;
    let joined = join_since(&mut carol, "travel", last - 1, &epoch).await;
    assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(true), Some(after)), "{joined}");
    assert_eq!(next_message(&mut carol, "travel").await["data"], "before the crash");
    assert_eq!(next_message(&mut carol, "travel").await, message);

    // The history API answers from Redis on any node.
    let (status, page) = b.api("GET", "/api/rooms/travel/history?since=0&limit=1000", json!(null)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["epoch"].as_str(), page["seq"].as_u64()), (Some(epoch.as_str()), Some(after)));
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=after).collect::<Vec<_>>());
    assert_eq!(page["messages"].as_array().unwrap().last(), Some(&message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_recovered_in_a_cluster_says_so() {
    let redis = RedisServer::start();
    let extra = "[history]\nsize = 3\n";
    let (a, b) = tokio::join!(Node::start_with("a", redis.url(), true, extra), Node::start_with("b", redis.url(), true, extra));
    let mut alice = a.client("alice").await;
    let epoch = alice.join("small").await["epoch"].as_str().unwrap().to_owned();
    for n in 1..=6 {
        publish_acked(&mut alice, "small", json!(n)).await;
    }
    let mut bob = b.client("bob").await;
    for (since, epoch, recovered) in [(2, epoch.as_str(), false), (3, "another", false), (7, epoch.as_str(), false), (3, epoch.as_str(), true)] {
        let joined = join_since(&mut bob, "small", since, epoch).await;
        assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(recovered), Some(6)), "since {since}: {joined}");
        if recovered {
            let got: Vec<u64> = messages(&mut bob, "small", 3).await.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            assert_eq!(got, [4, 5, 6]);
        }
        bob.expect_silence(Duration::from_millis(200)).await;
        bob.send(json!({"type": "leave", "room": "small"})).await;
        bob.recv_type("left").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gives_a_new_epoch_never_a_wrong_replay() {
    let mut redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let epoch = alice.join("fragile").await["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publish_acked(&mut alice, "fragile", json!(n)).await;
    }
    redis.stop();
    redis.restart();
    for node in [&a, &b] {
        assert!(eventually(Duration::from_secs(15), || async { http_get(node.addr, "/readyz").await.0 == 200 }).await);
    }
    let mut bob = b.client("bob").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let joined = loop {
        let joined = join_since(&mut bob, "fragile", 1, &epoch).await;
        if joined["epoch"] != epoch.as_str() || Instant::now() > deadline {
            break joined;
        }
        bob.send(json!({"type": "leave", "room": "fragile"})).await;
        bob.recv_type("left").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(joined["epoch"], epoch.as_str(), "a new epoch: {joined}");
    assert_eq!(joined["recovered"], false, "{joined}");
    // Nothing replayed (presence may still settle after the outage).
    while let Some(Event::Frame(frame)) = bob.next_event_within(Duration::from_millis(300)).await {
        assert_ne!(frame["type"], "message", "{frame}");
    }
    // Once a's room relays again (a room numbers its own messages, kept in
    // no history, until it has re-synced), numbering goes on above what the
    // nodes had seen, in the new epoch.
    until_relayed(&mut alice, &mut [&mut bob], "fragile").await;
    let (seq, _) = publish_acked(&mut alice, "fragile", json!("again")).await;
    assert!(seq > 3, "seq {seq}");
    // (The node that had numbers above the restarted counter raised it,
    // which names a numbering of its own again: read the epoch now.)
    let (_, page) = b.api("GET", "/api/rooms/fragile/history", json!(null)).await;
    let new_epoch = page["epoch"].as_str().unwrap();
    assert_ne!(new_epoch, epoch.as_str());
    let mut carol = a.client("carol").await;
    let joined = join_since(&mut carol, "fragile", seq - 1, new_epoch).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(next_message(&mut carol, "fragile").await["seq"], seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_right_after_an_acknowledged_publish_elsewhere_sees_it() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let mut alice = a.client("alice").await;
    let mut watcher = b.client("watcher").await;
    let epoch = alice.join("fresh").await["epoch"].as_str().unwrap().to_owned();
    watcher.join("fresh").await;
    until_relayed(&mut alice, &mut [&mut watcher], "fresh").await;
    for round in 0..20 {
        let (seq, message) = publish_acked(&mut alice, "fresh", json!(round)).await;
        // With since: the message comes in the replay or live, once.
        let mut bob = b.client("bob").await;
        let joined = join_since(&mut bob, "fresh", seq - 1, &epoch).await;
        assert_eq!(joined["recovered"], true, "round {round}: {joined}");
        assert_eq!(next_message(&mut bob, "fresh").await, message, "round {round}");
        // Since the message itself, which b may not have yet: it is not
        // sent again when it arrives.
        let mut dave = b.client("dave").await;
        let joined = join_since(&mut dave, "fresh", seq, &epoch).await;
        assert_eq!((joined["recovered"].as_bool(), joined["seq"].as_u64()), (Some(true), Some(seq)), "round {round}: {joined}");
        // Without since: joined's seq covers it, or it arrives live.
        let mut carol = b.client("carol").await;
        let joined = carol.join("fresh").await;
        if joined["seq"].as_u64().unwrap() < seq {
            assert_eq!(next_message(&mut carol, "fresh").await, message, "round {round}");
        }
        alice.send(json!({"type": "publish", "room": "fresh", "data": "next", "id": "n"})).await;
        let next = alice.recv_type("ack").await["seq"].as_u64().unwrap();
        assert_eq!(next_message(&mut bob, "fresh").await["seq"], next, "round {round}: nothing twice, no gap");
        assert_eq!(next_message(&mut carol, "fresh").await["seq"], next, "round {round}");
        assert_eq!(next_message(&mut dave, "fresh").await["seq"], next, "round {round}");
        next_message(&mut alice, "fresh").await;
        bob.close().await;
        carol.close().await;
        dave.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_resumes_on_the_other_node() {
    let redis = RedisServer::start();
    let (a, b) = tokio::join!(Node::start("a", redis.url(), true), Node::start("b", redis.url(), true));
    let open = |node: &Node, last: Option<String>| {
        let addr = node.addr;
        async move {
            let bearer = format!("Bearer {}", token("reader", json!({})));
            let mut headers = vec![("Authorization", bearer.as_str())];
            if let Some(id) = last.as_deref() {
                headers.push(("Last-Event-ID", id));
            }
            let stream = SseClient::open(addr, "/sse?rooms=feed", SseOpen { headers: &headers, ..Default::default() }).await;
            assert_eq!(stream.status, 200);
            stream
        }
    };
    let publish = |n: u64| {
        let a = &a;
        async move {
            let (status, reply) = a.api("POST", "/api/publish", json!({"room": "feed", "data": n})).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    let mut stream = open(&a, None).await;
    publish(1).await;
    assert_eq!(stream.next_data().await["seq"], 1);
    let last = stream.last_event_id.clone().expect("an id");
    drop(stream);
    for n in 2..=3 {
        publish(n).await;
    }
    let mut stream = open(&b, Some(last)).await;
    for seq in 2..=3 {
        let event = stream.next_data().await;
        assert_eq!((event["type"].as_str(), event["seq"].as_u64()), (Some("message"), Some(seq)), "{event}");
    }
    publish(4).await;
    assert_eq!(stream.next_data().await["seq"], 4);
}
