//! The WebSocket handshake: its checks, its timeout, the request head limit.

use super::*;

#[tokio::test]
async fn an_upgrade_with_another_version_gets_426_and_one_with_a_bad_key_400() {
    let server = start(config());
    let (_, head) = exchange(server.addr, &upgrade("8", KEY, "")).await;
    assert_eq!(head.status, 426, "{}", head.text);
    assert_eq!(head.header("sec-websocket-version"), Some("13"), "{}", head.text);
    // Not base64, and base64 of 15 bytes: neither is a 16-byte key.
    for key in ["abc", "AAAAAAAAAAAAAAAAAAAA"] {
        let (_, head) = exchange(server.addr, &upgrade("13", key, "")).await;
        assert_eq!(head.status, 400, "key {key:?}: {}", head.text);
    }
}

#[tokio::test]
async fn a_correct_upgrade_gets_101_and_then_welcome() {
    let server = start(config());
    let (mut stream, head) = exchange(server.addr, &upgrade("13", KEY, "")).await;
    assert_eq!(head.status, 101, "{}", head.text);
    assert_eq!(head.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{}", head.text);
    let mut buf = head.rest;
    assert_eq!(next_text(&mut stream, &mut buf).await["type"], "welcome");
    stream.write_all(&client_frame(1, true, br#"{"type":"ping","id":1}"#)).await.expect("write");
    assert_eq!(next_text(&mut stream, &mut buf).await, json!({"type": "pong", "id": 1}));
}

#[tokio::test]
async fn silent_and_trickling_clients_are_dropped_after_the_handshake_timeout() {
    let server = server_with(|c| c.server.handshake_timeout_ms = 300);
    let (mut upgraded, _) = ws_connect(&server).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    expect_dropped(&mut silent, Instant::now() + DROPPED_WITHIN).await;

    // A byte every 100 ms: never idle for long, never a whole request line.
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await.expect("connect").into_split();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /healthz?".iter().chain(&[b'a'; 100]) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    expect_dropped(&mut reader, Instant::now() + DROPPED_WITHIN).await;
    trickle.abort();

    // The timeout ends with the handshake: an upgraded connection stays.
    upgraded.expect_silence(Duration::from_millis(600)).await;
    assert_eq!(upgraded.request(ping(json!(1))).await, json!({"type": "pong", "id": 1}));
}

#[tokio::test]
async fn two_hundred_silent_sockets_keep_no_one_out_and_are_all_dropped() {
    let server = server_with(|c| c.server.handshake_timeout_ms = 500);
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_millis(500) + DROPPED_WITHIN;
    let (mut client, _) = ws_connect(&server).await;
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    for socket in &mut silent {
        expect_dropped(socket, deadline).await;
    }
    assert_eq!(client.request(ping(json!(1))).await, json!({"type": "pong", "id": 1}));
}

#[tokio::test]
async fn request_heads_over_16_kib_get_431() {
    let server = start(config());
    let healthz = |extra: &str| format!("GET /healthz HTTP/1.1\r\nHost: herald\r\n{extra}\r\n");
    let one_big = format!("X-Big: {}\r\n", "a".repeat(32 * 1024));
    let many: String = (0..40).map(|i| format!("X-Many-{i}: {}\r\n", "b".repeat(500))).collect();
    for extra in [&one_big, &many] {
        let (_, head) = exchange(server.addr, &upgrade("13", KEY, extra)).await;
        assert_eq!(head.status, 431, "/ws: {}", head.text);
        let (_, head) = exchange(server.addr, &healthz(extra)).await;
        assert_eq!(head.status, 431, "/healthz: {}", head.text);
    }
    let fits = format!("X-Big: {}\r\n", "a".repeat(8 * 1024));
    assert_eq!(exchange(server.addr, &healthz(&fits)).await.1.status, 200);
}

// ---- what the rate limit counts ------------------------------------------
