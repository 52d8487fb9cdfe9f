//! Namespaces across two nodes and a real Redis: `count` is cluster-wide in
//! every `joined` and `presence` reply and in the presence API, kept with
//! `presence = false` (which lists no one) and with `join_events = false`
//! (which tells no one, on either node); a namespace's history size bounds
//! what Redis keeps for its rooms.

use super::*;

const NAMESPACES: &str = "[[namespaces]]\nprefix = \"live.\"\npresence = false\njoin_events = false\n\
                          [[namespaces]]\nprefix = \"short.\"\nhistory_size = 2\n";

async fn pair(redis: &RedisServer) -> (Node, Node) {
    tokio::join!(
        Node::start_with("a", redis.url(), true, NAMESPACES),
        Node::start_with("b", redis.url(), true, NAMESPACES)
    )
}

async fn presence_count(client: &mut Client, room: &str) -> (Value, Value) {
    client.send(json!({"type": "presence", "room": room})).await;
    let presence = client.recv_type("presence").await;
    (presence["users"].clone(), presence["count"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_is_cluster_wide_without_lists_or_join_events() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut ann = a.client("ann").await;
    let joined = ann.join("live.show").await;
    assert_eq!((joined["users"].clone(), joined["count"].clone()), (json!([]), json!(1)));
    let mut bob = b.client("bob").await;
    let joined = bob.join("live.show").await;
    assert_eq!((joined["users"].clone(), joined["count"].clone()), (json!([]), json!(2)), "ann on a counts on b");
    let mut cat = a.client("cat").await;
    assert_eq!(cat.join("live.show").await["count"], 3);
    // The same user on both nodes is one user.
    let mut bob_on_a = a.client("bob").await;
    assert_eq!(bob_on_a.join("live.show").await["count"], 3);

    let mut outsider = b.client("dan").await;
    assert_eq!(presence_count(&mut outsider, "live.show").await, (json!([]), json!(3)));
    for node in [&a, &b] {
        let (status, reply) = node.api("GET", "/api/rooms/live.show/presence", Value::Null).await;
        assert_eq!(status, 200);
        assert_eq!((reply["users"].clone(), reply["count"].clone()), (json!([]), json!(3)), "{reply}");
    }
    // Nobody heard of the arrivals, on either node.
    for client in [&mut ann, &mut bob, &mut cat] {
        client.expect_silence(Duration::from_millis(300)).await;
    }

    // Departures count down everywhere, still silently.
    bob.close().await;
    bob_on_a.close().await;
    let counted_two = || async {
        let (_, reply) = b.api("GET", "/api/rooms/live.show/presence", Value::Null).await;
        reply["count"] == 2
    };
    assert!(eventually(WAIT, counted_two).await, "bob left on both nodes");
    // The room on a keeps its own number in step with b's departures.
    let room_counts_two = || async {
        let mut eve = a.client("eve").await;
        let count = eve.join("live.show").await["count"].clone();
        eve.close().await;
        count == 3
    };
    assert!(eventually(WAIT, room_counts_two).await, "a's room counted bob out");
    ann.expect_silence(Duration::from_millis(300)).await;

    // A room in no namespace, for contrast: lists and events cross nodes.
    ann.join("lobby").await;
    let joined = outsider.join("lobby").await;
    assert_eq!((joined["users"].clone(), joined["count"].clone()), (json!(["ann", "dan"]), json!(2)));
    assert_eq!(ann.recv_type("user_joined").await["user"], "dan");
    assert_eq!(presence_count(&mut ann, "lobby").await, (json!(["ann", "dan"]), json!(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_s_history_size_bounds_what_redis_keeps_for_its_rooms() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis).await;
    let mut seqs = Vec::new();
    for room in ["short.a", "lobby"] {
        for n in 1..=5 {
            let (status, reply) = a.api("POST", "/api/publish", json!({"room": room, "data": n})).await;
            assert_eq!(status, 200, "{reply}");
            seqs.push(reply["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);
    let (_, page) = b.api("GET", "/api/rooms/short.a/history", Value::Null).await;
    let held: Vec<&Value> = page["messages"].as_array().unwrap().iter().map(|m| &m["seq"]).collect();
    assert_eq!(held, [&json!(4), &json!(5)], "{page}");
    let (_, page) = b.api("GET", "/api/rooms/lobby/history", Value::Null).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(5), "the default history.size keeps all five");

    let mut ann = b.client("ann").await;
    let short_epoch = page_epoch(&b, "short.a").await;
    ann.send(json!({"type": "join", "room": "short.a", "since": 2, "epoch": short_epoch})).await;
    assert_eq!(ann.recv_type("joined").await["recovered"], false, "3 is no longer held");
    ann.send(json!({"type": "join", "room": "short.a", "since": 3, "epoch": short_epoch})).await;
    assert_eq!(ann.recv_type("joined").await["recovered"], true);
    let replayed: Vec<Value> = messages(&mut ann, "short.a", 2).await.into_iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(replayed, [json!(4), json!(5)]);
}

async fn page_epoch(node: &Node, room: &str) -> String {
    let (_, page) = node.api("GET", &format!("/api/rooms/{room}/history"), Value::Null).await;
    page["epoch"].as_str().unwrap().to_owned()
}
