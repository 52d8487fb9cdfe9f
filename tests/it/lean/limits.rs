//! Bounds: slow consumers by bytes, stalled API bodies, handshakes against the connection limit, the close grace.

use super::*;

#[tokio::test]
async fn a_slow_consumer_is_bounded_by_bytes_while_the_room_gets_every_message() {
    let server = server_with(|c| {
        c.limits.outbound_queue = 1024;
        c.limits.outbound_queue_bytes = 256 * 1024;
    });
    // It never reads again, and its small receive buffer fills at once.
    let mut slow = ws_connect_recv_buffer(&server, 4096).await;
    slow.join("flood").await;
    let (mut reader, _) = ws_connect(&server).await;
    reader.join("flood").await;
    let (mut publisher, _) = ws_connect(&server).await;
    publisher.join("flood").await;

    // Far fewer than `outbound_queue` frames, far more than its bytes and the
    // socket buffers. The reader takes each message before the next is sent.
    let frame = json!({"type": "publish", "room": "flood", "data": "x".repeat(60_000), "echo": false}).to_string();
    let mut seqs = Vec::new();
    while Snapshot::take(&server).await.get(SLOW_DROPS) == 0.0 {
        assert!(seqs.len() < 200, "no slow consumer dropped after {} messages of 60 KB", seqs.len());
        publisher.send_text(&frame).await;
        seqs.push(reader.recv_type("message").await["seq"].as_u64().expect("seq"));
    }
    // Its connection ends: its backlog, then a 4008 close or the end of the stream.
    let end = loop {
        match slow.next_event_within(WAIT).await {
            Some(Event::Frame(_)) => continue,
            Some(Event::Closed(close)) => break close,
            None => panic!("the slow consumer's connection is still open"),
        }
    };
    assert!(matches!(end, None | Some((4008, _))), "slow consumer closed with {end:?}");

    publisher.send_text(&frame).await;
    seqs.push(reader.recv_type("message").await["seq"].as_u64().expect("seq"));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the reader got every message: {seqs:?}");
    assert_eq!(Snapshot::take(&server).await.get(SLOW_DROPS), 1.0);
}

// ---- API bodies ----------------------------------------------------------

#[tokio::test]
async fn an_api_request_whose_body_stalls_is_dropped() {
    let server = server_with(|c| {
        c.server.handshake_timeout_ms = 500;
        c.api.key = API_KEY.into();
    });
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"room\""
    );
    stalled.write_all(request.as_bytes()).await.expect("write");
    let deadline = Instant::now() + Duration::from_millis(500) + DROPPED_WITHIN;
    let (status, stats) = api(server.addr, "GET", "/api/stats", Some(API_KEY), "").await;
    assert_eq!(status, 200, "{stats}");
    expect_dropped(&mut stalled, deadline).await;
    let (status, reply) = api(server.addr, "POST", "/api/publish", Some(API_KEY), r#"{"room":"r","data":1}"#).await;
    assert_eq!((status, &reply["seq"]), (200, &json!(1)), "{reply}");
}

// ---- the connection limit ------------------------------------------------

#[tokio::test]
async fn sockets_in_the_handshake_count_toward_max_connections() {
    let server = server_with(|c| {
        c.limits.max_connections = 3;
        // Longer than this test: the silent sockets stay until it closes them.
        c.server.handshake_timeout_ms = 10_000;
    });
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let url = server.ws_url();
    let url = url.as_str();
    let refused = eventually(WAIT, || async move { !upgrade_served(url).await }).await;
    assert!(refused, "three sockets in the handshake fill max_connections = 3");
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);

    drop(silent);
    let served = eventually(WAIT, || async move { upgrade_served(url).await }).await;
    assert!(served, "closed handshake sockets free their slots");
}

#[tokio::test]
async fn an_upgrade_on_a_kept_alive_http_connection_is_sent_to_a_fresh_one() {
    let server = server_with(|_| {});
    // A first request keeps the connection alive for actix-web ...
    let (mut stream, head) = exchange(server.addr, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n").await;
    assert_eq!(head.status, 200, "{}", head.text);
    let len: usize = head.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
    let mut body = head.rest;
    while body.len() < len {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("body in time").expect("read");
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    // ... and a subscription asked for on it is redirected to the same URL,
    // and the connection closed, so the client opens a fresh one.
    stream.write_all(b"GET /sse?rooms=lobby HTTP/1.1\r\nHost: herald\r\n\r\n").await.expect("write");
    let reply = read_until_closed(&mut stream, Vec::new(), WAIT).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 307"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("location: /sse?rooms=lobby"), "{reply}");
    // On a fresh connection the same request subscribes.
    let sse = sse_open(&server, "rooms=lobby").await;
    assert_eq!(sse.status, 200);
}

// ---- timers ----------------------------------------------------------------

/// Connections that ended after closing with 4001, as `/metrics` counts them.
async fn ended_with_4001(server: &TestServer) -> f64 {
    Snapshot::take(server).await.get(r#"herald_connections_closed_total{code="4001"}"#)
}

#[tokio::test]
async fn a_client_that_never_answers_a_close_is_let_go_after_the_close_grace() {
    let server = server_with(|config| {
        config.auth.required = true;
        config.auth.timeout_ms = 200;
    });
    let (mut stream, head) = exchange(server.addr, &upgrade("13", KEY, "")).await;
    assert_eq!(head.status, 101, "{}", head.text);
    let mut buf = head.rest;
    assert_eq!(next_text(&mut stream, &mut buf).await["type"], "welcome");
    // The authentication deadline comes from the connection's timer ...
    assert_eq!(close_code(&mut stream, &mut buf).await, Some(4001));
    let closed_at = Instant::now();
    // ... and the client neither answers the close nor closes its socket:
    // the connection ends (and is counted) once its close grace (2 s) is over.
    let ended = eventually(Duration::from_secs(10), || async { ended_with_4001(&server).await == 1.0 }).await;
    assert!(ended, "the connection is let go once its close grace ends");
    assert!(closed_at.elapsed() >= Duration::from_millis(1500), "not before the close grace");
    drop(stream);
}
