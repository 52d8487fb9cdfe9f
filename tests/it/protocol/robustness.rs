//! Bad input on the wire: binary frames, malformed text, oversized frames.

use super::*;

#[tokio::test]
async fn binary_frames_are_bad_request() {
    let (_server, mut alice) = alice_alone().await;
    alice.send_message(Message::Binary(br#"{"type":"ping"}"#.to_vec().into())).await;
    assert_error(&alice.recv().await, &["BAD_REQUEST"], "binary frame");
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn malformed_input_never_kills_the_server() {
    let server = server_with(|c| c.limits.max_message_bytes = 1 << 20);
    let (mut bad, _) = ws_connect(&server).await;
    bad.join("r").await;
    let open = "[".repeat(100_000);
    let closed = format!("{open}{}", "]".repeat(100_000));
    let in_field = format!(r#"{{"type":"join","room":{closed}}}"#);
    let in_id = format!(r#"{{"type":"ping","id":{closed}}}"#);
    let texts = [
        "{", "}", "nope", "\u{0}", "[[[", &open, &closed, &in_field, &in_id,
        r#"{"type":"ping","id":1e999}"#, r#"{"type":"ping","type":"join"}"#, "{\"type\":\"ping\"\u{0}}",
    ];
    for text in texts {
        bad.send_text(text).await;
        let reply = bad.recv().await;
        assert_eq!(reply["type"], "error", "{} -> {reply}", &text[..text.len().min(60)]);
    }
    for _ in 0..10 {
        bad.send_message(Message::Binary(vec![0xff; 100].into())).await;
        assert_error(&bad.recv().await, &["BAD_REQUEST"], "binary frame");
    }
    // Deeply nested `data` may be refused or delivered; either way the connection lives.
    bad.send_text(&format!(r#"{{"type":"publish","room":"r","data":{closed},"id":"deep","echo":false}}"#)).await;
    let reply = bad.recv().await;
    assert!(reply["type"] == "ack" || reply["type"] == "error", "deep data -> {:?}", reply.get("type"));

    assert_eq!(bad.request(json!({"type": "ping", "id": 1})).await, json!({"type": "pong", "id": 1}));
    let mut good = ws_connect_as(&server, "good").await;
    good.join("r").await;
    bad.recv_type("user_joined").await;
    publish(&mut good, "r", json!("still here")).await;
    assert_eq!(bad.recv_type("message").await["data"], "still here");
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_with_1009() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("r").await;
    publish(&mut alice, "r", json!("x".repeat(900))).await;
    alice.send(json!({"type": "publish", "room": "r", "data": "x".repeat(2000)})).await;
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1009);
    let mut other = ws_connect_as(&server, "bob").await;
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
}
