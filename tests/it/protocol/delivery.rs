//! What a published message carries, echo, and `seq` order under concurrent publishers.

use super::*;

#[tokio::test]
async fn arbitrary_data_is_delivered_verbatim() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    let nested = (0..20).fold(json!("core"), |inner, i| json!({ "level": i, "inner": [inner] }));
    let samples = [
        json!(0), json!(-12.5e-3), json!(u64::MAX), json!(i64::MIN), json!(false), json!(""), json!([]), json!({}),
        json!("quote \" backslash \\ newline \n tab \t nul \u{0} emoji \u{1F600} \u{e9} \u{2028}"),
        json!([1, "a", null, true, {"k": [2.5, {"deep": null}]}]),
        json!({"type": "not a frame", "id": 9, "room": "elsewhere", "seq": -1}),
        nested,
    ];
    for data in samples {
        publish(&mut alice, "r", data.clone()).await;
        assert_eq!(bob.recv_type("message").await["data"], data);
        alice.send(json!({"type": "direct", "to": "bob", "data": data})).await;
        assert_eq!(bob.recv_type("direct").await["data"], data);
    }
}

#[tokio::test]
async fn echo_false_skips_only_the_sending_connection() {
    let server = server();
    let (mut tab1, mut tab2) = (ws_connect_as(&server, "alice").await, ws_connect_as(&server, "alice").await);
    let mut bob = ws_connect_as(&server, "bob").await;
    for c in [&mut tab1, &mut tab2, &mut bob] {
        c.join("r").await;
    }
    frames(&mut tab1).await;
    let ack = tab1.request(json!({"type": "publish", "room": "r", "data": "x", "echo": false, "id": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    tab1.expect_silence(QUIET).await;
    assert_eq!(tab2.recv_type("message").await["data"], "x");
    assert_eq!(bob.recv_type("message").await["data"], "x");
}

#[tokio::test]
async fn echo_defaults_to_true() {
    let (_server, mut alice) = alice_alone().await;
    alice.join("r").await;
    alice.send(json!({"type": "publish", "room": "r", "data": "mine"})).await;
    let message = alice.recv().await;
    assert_eq!((&message["type"], &message["data"]), (&json!("message"), &json!("mine")), "{message}");
    alice.send(json!({"type": "publish", "room": "r", "data": "again", "echo": true})).await;
    assert_eq!(alice.recv().await["data"], "again");
}

#[tokio::test]
async fn seq_starts_at_one_and_counts_each_room_on_its_own() {
    let server = server();
    let (mut alice, mut bob) = pair(&server, "a").await;
    alice.join("b").await;
    let mut seqs = Vec::new();
    for (room, data) in [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5)] {
        seqs.push(publish(&mut alice, room, json!(data)).await);
    }
    assert_eq!(seqs, [1, 2, 1, 3, 2]);
    for (seq, data) in [(1, 1), (2, 2), (3, 4)] {
        let message = bob.recv().await;
        assert_eq!((&message["seq"], &message["data"]), (&json!(seq), &json!(data)), "{message}");
    }
}

/// Publishes `count` numbered messages to `busy` without echo and without waiting.
async fn burst(client: &mut Client, name: &str, count: u64) {
    for n in 0..count {
        client.send(json!({"type": "publish", "room": "busy", "data": [name, n], "echo": false})).await;
    }
}

#[tokio::test]
async fn publishes_from_two_clients_arrive_in_seq_order_without_gaps() {
    const EACH: u64 = 100;
    let server = server();
    let (mut p1, mut p2) = (ws_connect_as(&server, "p1").await, ws_connect_as(&server, "p2").await);
    let mut watcher = ws_connect_as(&server, "watcher").await;
    for c in [&mut watcher, &mut p1, &mut p2] {
        c.join("busy").await;
    }
    tokio::join!(burst(&mut p1, "p1", EACH), burst(&mut p2, "p2", EACH));
    let mut next = [0u64, 0u64];
    for expected in 1..=2 * EACH {
        let message = watcher.recv_type("message").await;
        assert_eq!(message["seq"], expected, "{message}");
        let who = usize::from(message["from"] == "p2");
        assert_eq!(message["data"], json!([message["from"], next[who]]), "each sender's order is kept");
        next[who] += 1;
    }
    watcher.expect_silence(QUIET).await;
}

/// Publishes to `room` through the API as fast as it answers until `stop`.
async fn publish_until(server: std::net::SocketAddr, room: &str, key: &str, stop: tokio::sync::watch::Receiver<bool>) {
    let body = json!({"room": room, "data": "live"}).to_string();
    while !*stop.borrow() {
        let (status, _) = api(server, "POST", "/api/publish", Some(key), &body).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn joined_comes_before_every_frame_of_the_room_even_while_it_is_busy() {
    let server = server_with(|c| c.api.key = "k".into());
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("busy").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishers: Vec<_> =
        (0..2).map(|_| tokio::spawn(publish_until(server.addr, "busy", "k", stopped.clone()))).collect();
    for round in 0..20 {
        let (mut bob, _) = ws_connect(&server).await;
        bob.send(json!({"type": "join", "room": "busy", "id": round})).await;
        let first = bob.recv().await;
        assert_eq!((&first["type"], &first["id"]), (&json!("joined"), &json!(round)), "round {round}: {first}");
        let next = bob.recv_type("message").await;
        assert!(next["seq"].as_u64().unwrap() > 0);
    }
    stop.send(true).unwrap();
    for publisher in publishers {
        publisher.await.unwrap();
    }
}
