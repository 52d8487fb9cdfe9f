//! `/metrics` after a scripted session: every counter moved by exactly what
//! the session did, and every gauge is back where it started once everyone
//! has left. Frames, bytes, publishes, fan-out, latency samples, API calls,
//! closes by code and drops by reason are each accounted for.

use crate::support::*;
use serde_json::{json, Value};

const KEY: &str = "metrics-test-key";

/// Asserts the value of each series.
#[track_caller]
fn assert_values(snapshot: &Snapshot, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(snapshot.get(series), *value, "{series}");
    }
}

/// Reads `n` frames, returning them and their length as the server wrote them.
async fn read(client: &mut Client, n: usize) -> (Vec<Value>, usize) {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(client.recv().await);
    }
    // Herald writes compact JSON; re-encoding gives the same length whatever the key order.
    let bytes = frames.iter().map(|f| f.to_string().len()).sum();
    (frames, bytes)
}

async fn gauges_settle(server: &TestServer, expected: &[(&str, f64)]) {
    let settled = eventually(WAIT, || async {
        let now = Snapshot::take(server).await;
        expected.iter().all(|(series, value)| now.value(series) == Some(*value))
    })
    .await;
    if !settled {
        assert_values(&Snapshot::take(server).await, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_moves_every_counter_by_exactly_its_share() {
    let mut config = config();
    config.api.key = KEY.into();
    config.limits.max_message_bytes = 1024;
    let server = start(config);
    let fresh = Snapshot::take(&server).await;
    assert_values(&fresh, &[
        (&format!(r#"herald_build_info{{node="test",version="{}"}}"#, env!("CARGO_PKG_VERSION")), 1.0),
        (r#"herald_connections_open{transport="ws"}"#, 0.0),
        ("herald_users_online", 0.0),
        ("herald_rooms_active", 0.0),
        ("herald_rooms_memberships", 0.0),
    ]);

    // Two users, three connections (bob has two tabs), one room.
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    let mut tab = ws_connect_as(&server, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    tab.join("lobby").await;
    assert_eq!(alice.recv().await["type"], "user_joined", "bob's second tab is not a second user_joined");
    let joined = Snapshot::take(&server).await;
    assert_values(&joined, &[
        (r#"herald_connections_open{transport="ws"}"#, 3.0),
        ("herald_users_online", 2.0),
        ("herald_rooms_active", 1.0),
        ("herald_rooms_memberships", 3.0),
    ]);
    assert_moved(&fresh, &joined, &[
        (r#"herald_connections_accepted_total{transport="ws"}"#, 3.0),
        (r#"herald_frames_received_total{type="join"}"#, 3.0),
        (r#"herald_frames_sent_total{type="welcome"}"#, 3.0),
        (r#"herald_frames_sent_total{type="joined"}"#, 3.0),
        (r#"herald_frames_sent_total{type="user_joined"}"#, 1.0),
    ]);

    // Two client publishes (echoed to alice) and one from the API reach
    // three members each; one malformed API call is refused.
    let publishes = [
        json!({"type": "publish", "room": "lobby", "data": {"n": 1}, "id": 1}).to_string(),
        json!({"type": "publish", "room": "lobby", "data": "two", "id": "b"}).to_string(),
    ];
    for text in &publishes {
        alice.send_text(text).await;
    }
    let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"lobby","data":3}"#).await;
    assert_eq!(status, 200);
    let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"lobby"}"#).await;
    assert_eq!(status, 400);
    let (to_alice, alice_bytes) = read(&mut alice, 5).await;
    let (_, bob_bytes) = read(&mut bob, 3).await;
    let (_, tab_bytes) = read(&mut tab, 3).await;
    assert_eq!(to_alice.iter().filter(|f| f["type"] == "ack").count(), 2, "{to_alice:?}");
    let published = Snapshot::take(&server).await;
    let bytes_in = publishes.iter().map(String::len).sum::<usize>() as f64;
    let bytes_out = (alice_bytes + bob_bytes + tab_bytes) as f64;
    assert_moved(&joined, &published, &[
        (r#"herald_frames_received_total{type="publish"}"#, 2.0),
        (r#"herald_transport_received_bytes_total{transport="ws"}"#, bytes_in),
        (r#"herald_transport_sent_bytes_total{transport="ws"}"#, bytes_out),
        (r#"herald_frames_sent_total{type="message"}"#, 9.0),
        (r#"herald_frames_sent_total{type="ack"}"#, 2.0),
        (r#"herald_messages_published_total{source="client"}"#, 2.0),
        (r#"herald_messages_published_total{source="api"}"#, 1.0),
        ("herald_messages_delivered_total", 9.0),
        ("herald_messages_publish_latency_seconds_count", 3.0),
        (r#"herald_api_requests_total{route="/api/publish",status="2xx"}"#, 1.0),
        (r#"herald_api_requests_total{route="/api/publish",status="4xx"}"#, 1.0),
        (r#"herald_api_request_duration_seconds_count{route="/api/publish"}"#, 2.0),
        (r#"herald_frames_dropped_total{reason="slow_consumer"}"#, 0.0),
    ]);

    // Ends of every kind: a normal close, a vanished client, an oversized
    // message, a bad token.
    tab.close().await;
    drop(bob);
    let mut big = ws_connect(&server).await.0;
    big.send_text(&"x".repeat(2000)).await;
    assert_eq!(big.expect_close().await.0, 1009);
    let mut forged = ws_connect_raw(&format!("{}?token=forged", server.ws_url()), &[]).await;
    assert_eq!(forged.expect_close().await.0, 4002);
    gauges_settle(&server, &[
        (r#"herald_connections_open{transport="ws"}"#, 1.0),
        ("herald_users_online", 1.0),
        ("herald_rooms_memberships", 1.0),
    ])
    .await;
    let ended = Snapshot::take(&server).await;
    assert_moved(&published, &ended, &[
        (r#"herald_connections_accepted_total{transport="ws"}"#, 2.0),
        (r#"herald_connections_closed_total{code="1000"}"#, 1.0),
        (r#"herald_connections_closed_total{code="1006"}"#, 1.0),
        (r#"herald_connections_closed_total{code="1009"}"#, 1.0),
        (r#"herald_connections_closed_total{code="4002"}"#, 1.0),
        (r#"herald_connections_closed_total{code="other"}"#, 0.0),
        (r#"herald_connections_dropped_total{reason="size"}"#, 1.0),
        (r#"herald_connections_dropped_total{reason="auth"}"#, 1.0),
        (r#"herald_connections_dropped_total{reason="rate_limit"}"#, 0.0),
        (r#"herald_connections_dropped_total{reason="slow_consumer"}"#, 0.0),
        (r#"herald_connections_dropped_total{reason="heartbeat"}"#, 0.0),
        (r#"herald_frames_dropped_total{reason="size"}"#, 1.0),
        (r#"herald_frames_sent_total{type="user_left"}"#, 1.0),
    ]);

    // The last one leaves: everything held is released.
    alice.close().await;
    gauges_settle(&server, &[
        (r#"herald_connections_open{transport="ws"}"#, 0.0),
        ("herald_users_online", 0.0),
        ("herald_rooms_memberships", 0.0),
        ("herald_rooms_active", 0.0),
        (r#"herald_connections_closed_total{code="1000"}"#, 2.0),
        (r#"herald_actor_mailbox_backlog{actor="connection"}"#, 0.0),
        (r#"herald_actor_mailbox_backlog{actor="room"}"#, 0.0),
        ("herald_connections_queue_depth_max", 0.0),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_frames_and_the_close_they_end_in_are_counted_once_each() {
    let mut config = config();
    rate_limits(&mut config, 1, 3);
    let server = start(config);
    let before = Snapshot::take(&server).await;
    let (mut client, _) = ws_connect(&server).await;
    for id in 0..4 {
        client.send(json!({"type": "ping", "id": id})).await;
    }
    let mut refused = 0;
    let code = loop {
        match client.next_event().await {
            Event::Frame(frame) if frame["code"] == "RATE_LIMITED" => refused += 1,
            Event::Frame(_) => {}
            Event::Closed(close) => break close.map(|(code, _)| code),
        }
    };
    assert_eq!((refused, code), (2, Some(1008)));
    assert!(
        eventually(WAIT, || async {
            Snapshot::take(&server).await.value(r#"herald_connections_closed_total{code="1008"}"#) == Some(1.0)
        })
        .await
    );
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[
        (r#"herald_frames_received_total{type="ping"}"#, 4.0),
        (r#"herald_frames_sent_total{type="pong"}"#, 1.0),
        (r#"herald_frames_dropped_total{reason="rate_limit"}"#, 3.0),
        (r#"herald_connections_dropped_total{reason="rate_limit"}"#, 1.0),
        (r#"herald_connections_closed_total{code="1008"}"#, 1.0),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_shows_in_the_queue_gauges_until_it_is_dropped() {
    let mut config = config();
    config.api.key = KEY.into();
    config.limits.outbound_queue = 64;
    let server = start(config);
    let mut reader = ws_connect_as(&server, "reader").await;
    reader.join("firehose").await;
    let mut stalled = ws_connect_as(&server, "stalled").await;
    stalled.join("firehose").await;
    reader.recv_type("user_joined").await;
    // `stalled` reads nothing from now on; big messages fill its socket
    // buffers first, then its queue, until it is dropped as a slow consumer.
    let data = json!("y".repeat(30_000)).to_string();
    let body = format!(r#"{{"room":"firehose","data":{data}}}"#);
    let mut deepest = 0.0f64;
    let mut sent = 0;
    while sent < 2000 {
        let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), &body).await;
        assert_eq!(status, 200);
        sent += 1;
        reader.recv_type("message").await;
        if sent % 20 == 0 {
            let now = Snapshot::take(&server).await;
            deepest = deepest.max(now.get("herald_connections_queue_depth_max"));
            if now.get(r#"herald_connections_dropped_total{reason="slow_consumer"}"#) == 1.0 {
                break;
            }
        }
    }
    assert!(deepest > 0.0, "the stalled connection's queue was seen filling");
    gauges_settle(&server, &[(r#"herald_connections_dropped_total{reason="slow_consumer"}"#, 1.0)]).await;
    let after = Snapshot::take(&server).await;
    assert!(after.get(r#"herald_frames_dropped_total{reason="slow_consumer"}"#) >= 1.0, "{}", after.0);
    drop(stalled);
    gauges_settle(&server, &[
        (r#"herald_connections_closed_total{code="4008"}"#, 1.0),
        ("herald_connections_queue_depth_max", 0.0),
        (r#"herald_actor_mailbox_backlog{actor="connection"}"#, 0.0),
    ])
    .await;
}

#[tokio::test]
async fn a_close_without_a_code_is_counted_as_1005() {
    let server = start(config());
    let before = Snapshot::take(&server).await;
    let (mut client, _) = ws_connect(&server).await;
    client.send_message(tokio_tungstenite::tungstenite::Message::Close(None)).await;
    let _ = client.next_event_within(WAIT).await;
    gauges_settle(&server, &[(r#"herald_connections_closed_total{code="1005"}"#, before.get(r#"herald_connections_closed_total{code="1005"}"#) + 1.0)])
        .await;
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(r#"herald_connections_closed_total{code="other"}"#, 0.0)]);
}
