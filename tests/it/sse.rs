//! The Server-Sent Events transport over real sockets, beside WebSocket
//! clients and the server API: authentication and room permissions,
//! deliveries with the room's `seq`, direct and broadcast frames, presence,
//! heartbeats, limits and a stalled reader.

use crate::support::*;

use std::time::Duration;

use herald::Config;
use serde_json::{json, Value};

const KEY: &str = "sse-test-key";

fn sse_config() -> Config {
    let mut config = config();
    config.api.key = KEY.into();
    config
}

async fn call(server: &TestServer, method: &str, path: &str, body: Value) -> Value {
    let (status, reply) = api(server.addr, method, path, Some(KEY), &body.to_string()).await;
    assert_eq!(status, 200, "{method} {path}: {reply}");
    reply
}

async fn metric_value(server: &TestServer, series: &str) -> f64 {
    Snapshot::take(server).await.value(series).unwrap_or(0.0)
}

/// Opens `/sse` with the token in `Authorization: Bearer`.
async fn sse_as(server: &TestServer, user: &str, rooms: &str) -> SseClient {
    let bearer = format!("Bearer {}", token(user, json!({})));
    let client =
        SseClient::open(server.addr, &format!("/sse?rooms={rooms}"), SseOpen { headers: &[("Authorization", &bearer)], ..Default::default() })
            .await;
    assert_eq!(client.status, 200, "{user} opening /sse?rooms={rooms}");
    client
}

async fn users_in(server: &TestServer, room: &str) -> Vec<String> {
    let reply = call(server, "GET", &format!("/api/rooms/{room}/presence"), Value::Null).await;
    let mut users: Vec<String> =
        reply["users"].as_array().expect("users").iter().map(|u| u.as_str().unwrap().to_owned()).collect();
    users.sort();
    users
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401_while_auth_is_required() {
    let server = start(config_auth_required());
    let refused = |client: &SseClient| (client.status, client.header("www-authenticate").map(str::to_owned));

    let missing = sse_open(&server, "rooms=lobby").await;
    assert_eq!(refused(&missing), (401, Some("Bearer".into())));
    assert!(missing.error_body().await["error"].as_str().unwrap().contains("token"));

    let bad_header = SseClient::open(
        server.addr,
        "/sse?rooms=lobby",
        SseOpen { headers: &[("Authorization", "Bearer not-a-jwt")], ..Default::default() },
    )
    .await;
    assert_eq!(bad_header.status, 401);
    assert_eq!(bad_header.error_body().await, json!({"error": "invalid token"}));

    let forged = token_with(json!({"sub": "mallory"}), json!({}), "another-secret");
    assert_eq!(sse_open(&server, &format!("rooms=lobby&token={forged}")).await.status, 401);
    let expired = token("alice", json!({"exp": 1_000_000_000}));
    assert_eq!(sse_open(&server, &format!("rooms=lobby&token={expired}")).await.status, 401);

    // The same token is good in either place; the header wins over the query.
    let good = token("alice", json!({}));
    assert_eq!(sse_open(&server, &format!("rooms=lobby&token={good}")).await.status, 200);
    let bearer = format!("Bearer {good}");
    let both = SseClient::open(
        server.addr,
        "/sse?rooms=lobby&token=not-a-jwt",
        SseOpen { headers: &[("Authorization", &bearer)], ..Default::default() },
    )
    .await;
    assert_eq!(both.status, 200);
    assert_eq!(both.header("content-type"), Some("text/event-stream"));
    assert_eq!(both.header("cache-control"), Some("no-cache"));
}

#[tokio::test]
async fn a_bad_token_is_401_even_when_auth_is_optional() {
    let server = start(config());
    assert_eq!(sse_open(&server, "rooms=lobby&token=garbage").await.status, 401);
    // No token at all: an anonymous subscriber.
    assert_eq!(sse_open(&server, "rooms=lobby").await.status, 200);
}

#[tokio::test]
async fn rooms_the_token_may_not_join_are_403_and_bad_names_400() {
    let mut config = config_auth_required();
    config.limits.max_rooms_per_conn = 3;
    let server = start(config);
    let scoped = token("alice", json!({"rooms": ["chat:*"]}));
    let open = |query: String| {
        let addr = server.addr;
        async move { SseClient::open(addr, &format!("/sse?{query}"), SseOpen::default()).await }
    };

    assert_eq!(open(format!("rooms=chat:1,chat:2&token={scoped}")).await.status, 200);
    let forbidden = open(format!("rooms=chat:1,lobby&token={scoped}")).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.error_body().await["error"].as_str().unwrap().contains("lobby"));

    let plain = token("alice", json!({}));
    assert_eq!(open(format!("rooms=user:alice&token={plain}")).await.status, 200);
    assert_eq!(open(format!("rooms=user:bob&token={plain}")).await.status, 403);

    for rooms in ["a,,b", "a%20b", "has/slash", &"x".repeat(129)] {
        let refused = open(format!("rooms={rooms}&token={plain}")).await;
        assert_eq!(refused.status, 400, "rooms={rooms}");
        assert!(refused.error_body().await["error"].as_str().unwrap().contains("invalid room name"));
    }
    let too_many = open(format!("rooms=a,b,c,d&token={plain}")).await;
    assert_eq!(too_many.status, 400);
    assert!(too_many.error_body().await["error"].as_str().unwrap().contains("too many rooms"));

    // Nothing refused was ever counted as open.
    assert!(eventually(WAIT, || async { metric_value(&server, OPEN_SSE).await == 0.0 }).await);
    assert_eq!(metric_value(&server, ACCEPTED_SSE).await, 2.0);
}

#[tokio::test]
async fn api_and_websocket_publishes_reach_sse_members_in_one_seq_order() {
    let server = start(sse_config());
    let mut ws = ws_connect_as(&server, "wes").await;
    ws.join("orders").await;
    let mut sse = sse_as(&server, "sam", "orders").await;

    // Each WebSocket publish is acknowledged before the next API publish, so
    // the order of the six is fixed: seq 1..=6, alternating sources.
    let mut seen_ws = Vec::new();
    for n in 0..6u64 {
        if n % 2 == 0 {
            let reply = call(&server, "POST", "/api/publish", json!({"room": "orders", "data": {"n": n}})).await;
            assert_eq!(reply["seq"], n + 1);
        } else {
            ws.send(json!({"type": "publish", "room": "orders", "data": {"n": n}, "id": n})).await;
            loop {
                let frame = ws.recv().await;
                match frame["type"].as_str() {
                    Some("ack") => {
                        assert_eq!((frame["id"].as_u64(), frame["seq"].as_u64()), (Some(n), Some(n + 1)), "{frame}");
                        break;
                    }
                    Some("message") => seen_ws.push(frame),
                    _ => {}
                }
            }
        }
    }
    while seen_ws.len() < 6 {
        let frame = ws.recv_type("message").await;
        seen_ws.push(frame);
    }
    for (n, ws_frame) in seen_ws.iter().enumerate() {
        let event = sse.next_data().await;
        assert_eq!(event["type"], "message", "{event}");
        assert_eq!(event["room"], "orders");
        assert_eq!(event["seq"], n as u64 + 1, "{event}");
        assert_eq!(event["data"], json!({"n": n}));
        assert_eq!(event["from"], if n % 2 == 0 { "server" } else { "wes" });
        assert_eq!(&event, ws_frame, "both transports carry the same frame");
    }
}

#[tokio::test]
async fn direct_reaches_every_connection_of_a_user() {
    let server = start(sse_config());
    let mut bob_ws = ws_connect_as(&server, "bob").await;
    let mut bob_sse = sse_as(&server, "bob", "").await;
    let mut alice = ws_connect_as(&server, "alice").await;

    call(&server, "POST", "/api/direct", json!({"user": "bob", "data": {"order": 7, "status": "shipped"}})).await;
    let from_api = bob_sse.next_data().await;
    assert_eq!(from_api["type"], "direct");
    assert_eq!(from_api["from"], "server");
    assert_eq!(from_api["data"], json!({"order": 7, "status": "shipped"}));
    assert_eq!(bob_ws.recv_type("direct").await["data"], from_api["data"]);

    alice.send(json!({"type": "direct", "to": "bob", "data": "hi bob"})).await;
    let from_alice = bob_sse.next_data().await;
    assert_eq!((from_alice["type"].as_str(), from_alice["from"].as_str()), (Some("direct"), Some("alice")));
    assert_eq!(from_alice["data"], "hi bob");
    assert_eq!(bob_ws.recv_type("direct").await["data"], "hi bob");
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let server = start(sse_config());
    let mut ws = ws_connect_as(&server, "wes").await;
    let mut in_room = sse_as(&server, "sam", "lobby").await;
    let mut no_rooms = sse_as(&server, "sid", "").await;
    let mut anonymous = sse_open(&server, "").await;
    assert_eq!(anonymous.status, 200);

    let reply = call(&server, "POST", "/api/broadcast", json!({"data": {"notice": "maintenance at noon"}})).await;
    assert_eq!(reply["delivered"], 4, "{reply}");
    for sse in [&mut in_room, &mut no_rooms, &mut anonymous] {
        let event = sse.next_data().await;
        assert_eq!(event["type"], "broadcast");
        assert_eq!(event["data"], json!({"notice": "maintenance at noon"}));
    }
    assert_eq!(ws.recv_type("broadcast").await["data"]["notice"], "maintenance at noon");
}

#[tokio::test]
async fn an_sse_client_joins_presence_and_leaves_when_its_stream_closes() {
    let server = start(sse_config());
    let mut watcher = ws_connect_as(&server, "watcher").await;
    watcher.join("hall").await;

    let mut carol = sse_as(&server, "carol", "hall,annex").await;
    let joined = watcher.recv_type("user_joined").await;
    assert_eq!((joined["room"].as_str(), joined["user"].as_str()), (Some("hall"), Some("carol")));
    // The response began after the joins landed: presence already agrees.
    assert_eq!(users_in(&server, "hall").await, ["carol", "watcher"]);
    assert_eq!(users_in(&server, "annex").await, ["carol"]);
    assert_eq!(call(&server, "GET", "/api/users/carol/status", Value::Null).await["online"], true);
    let stats = call(&server, "GET", "/api/stats", Value::Null).await;
    assert_eq!((stats["connections"].as_u64(), stats["users"].as_u64(), stats["rooms"].as_u64()), (Some(2), Some(2), Some(2)));
    assert_eq!(metric_value(&server, OPEN_SSE).await, 1.0);
    assert_eq!(metric_value(&server, OPEN_WS).await, 1.0);

    // Room events that are not messages are not SSE events.
    let mut late = ws_connect_as(&server, "late").await;
    late.join("hall").await;
    late.send(json!({"type": "typing", "room": "hall", "typing": true})).await;
    late.send(json!({"type": "publish", "room": "hall", "data": "first"})).await;
    assert_eq!(carol.next_data().await["data"], "first");

    drop(carol);
    let left = watcher.recv_type("user_left").await;
    assert_eq!((left["room"].as_str(), left["user"].as_str()), (Some("hall"), Some("carol")));
    assert_eq!(users_in(&server, "hall").await, ["late", "watcher"]);
    assert_eq!(users_in(&server, "annex").await, Vec::<String>::new());
    assert_eq!(call(&server, "GET", "/api/users/carol/status", Value::Null).await["online"], false);
    assert!(eventually(WAIT, || async { metric_value(&server, OPEN_SSE).await == 0.0 }).await);
}

#[tokio::test]
async fn a_ping_comment_comes_at_the_heartbeat_interval() {
    let mut config = sse_config();
    config.heartbeat.interval_ms = 200;
    config.heartbeat.timeout_ms = 400;
    let server = start(config);
    let mut sse = sse_as(&server, "quiet", "lobby").await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        match sse.next_within(WAIT).await {
            Some(SseItem::Comment(comment)) if comment == "ping" => pings += 1,
            Some(SseItem::Comment(_)) => {}
            other => panic!("expected comments only, got {other:?}"),
        }
    }
    // A stream cannot answer pings, so silence past the timeout does not end it.
    assert!(started.elapsed() >= Duration::from_millis(500));
    call(&server, "POST", "/api/publish", json!({"room": "lobby", "data": "still here"})).await;
    assert_eq!(sse.next_data().await["data"], "still here");
}

#[tokio::test]
async fn sse_connections_count_against_max_connections() {
    let mut config = sse_config();
    config.limits.max_connections = 2;
    let server = start(config);
    let _ws = ws_connect_as(&server, "wes").await;
    let _sse = sse_as(&server, "sam", "lobby").await;
    let refused = sse_open(&server, "rooms=lobby").await;
    assert_eq!(refused.status, 503);
    assert!(refused.error_body().await["error"].as_str().unwrap().contains("connection limit"));
}

#[tokio::test]
async fn a_cross_origin_subscriber_gets_cors_headers_for_an_allowed_origin() {
    let mut config = sse_config();
    config.server.allowed_origins = vec!["https://app.example".into()];
    let server = start(config);
    let allowed = SseClient::open(
        server.addr,
        "/sse?rooms=lobby",
        SseOpen { headers: &[("Origin", "https://app.example")], ..Default::default() },
    )
    .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://app.example"));
    let other =
        SseClient::open(server.addr, "/sse?rooms=lobby", SseOpen { headers: &[("Origin", "https://evil.example")], ..Default::default() })
            .await;
    assert_eq!(other.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_is_dropped_while_other_members_keep_receiving() {
    const MESSAGES: usize = 400;
    let mut config = sse_config();
    config.limits.outbound_queue = 16;
    config.limits.max_message_bytes = 131_072;
    let server = start(config);
    let mut ws = ws_connect_as(&server, "wes").await;
    ws.join("flood").await;
    let mut reader = sse_as(&server, "reader", "flood").await;
    let bearer = format!("Bearer {}", token("stalled", json!({})));
    let stalled = SseClient::open(
        server.addr,
        "/sse?rooms=flood",
        SseOpen { headers: &[("Authorization", &bearer)], recv_buffer: Some(4096) },
    )
    .await;
    assert_eq!(stalled.status, 200);

    // 400 x 32 KiB: far more than the stalled client's socket buffers, its
    // queue of 16 frames and the HTTP write buffer together.
    let blob = "x".repeat(32 * 1024);
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(MESSAGES);
        while seqs.len() < MESSAGES {
            let event = reader.next_data().await;
            seqs.push(event["seq"].as_u64().expect("seq"));
        }
        (reader, seqs)
    });
    let ws_reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(MESSAGES);
        while seqs.len() < MESSAGES {
            seqs.push(ws.recv_type("message").await["seq"].as_u64().expect("seq"));
        }
        (ws, seqs)
    });
    for n in 0..MESSAGES {
        call(&server, "POST", "/api/publish", json!({"room": "flood", "data": {"n": n, "blob": blob}})).await;
    }
    let (_reader, seqs) = reading.await.expect("the SSE reader gets every message");
    assert_eq!(seqs, (1..=MESSAGES as u64).collect::<Vec<_>>());
    let (_ws, ws_seqs) = ws_reading.await.expect("the WebSocket member gets every message");
    assert_eq!(ws_seqs, seqs);

    assert_eq!(metric_value(&server, r#"herald_connections_dropped_total{reason="slow_consumer"}"#).await, 1.0);
    assert!(
        eventually(WAIT, || async { users_in(&server, "flood").await == ["reader", "wes"] }).await,
        "the stalled reader should have left presence: {:?}",
        users_in(&server, "flood").await
    );
    assert!(
        eventually(WAIT, || async { metric_value(&server, OPEN_SSE).await == 1.0 }).await,
        "the stalled reader's stream should be closed"
    );

    // Its stream ends: what its socket buffers held, then the end.
    let mut stalled = stalled;
    let mut backlog = 0;
    loop {
        match stalled.next_within(WAIT).await {
            Some(SseItem::Data(_)) => backlog += 1,
            Some(SseItem::Comment(_)) => {}
            Some(SseItem::End) => break,
            None => panic!("the stalled reader's stream is still open after {backlog} events"),
        }
    }
    assert!(backlog < MESSAGES, "the stalled reader was sent everything ({backlog} events)");
}
