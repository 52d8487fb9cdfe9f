//! Hardening end to end, over real sockets: the per-connection rate limit and
//! its strikes, the message size limit (whole and fragmented), heartbeats
//! against a raw client that never answers, the connection limit, the origin
//! check, a barrage of bad input, and the exact movement of every counter.

use crate::support::*;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};

const RATE_LIMITED: &str = r#"herald_frames_dropped_total{reason="rate_limit"}"#;
const RATE_CLOSES: &str = r#"herald_connections_dropped_total{reason="rate_limit"}"#;
const OVERSIZED: &str = r#"herald_frames_dropped_total{reason="size"}"#;
const HEARTBEAT: &str = r#"herald_connections_dropped_total{reason="heartbeat"}"#;
const ACCEPTED: &str = ACCEPTED_WS;
const REFUSED_MAX: &str = "herald_connections_refused_total{reason=\"max_connections\"}";
const REFUSED_ORIGIN: &str = "herald_connections_refused_total{reason=\"origin\"}";
const REFUSED_DRAINING: &str = "herald_connections_refused_total{reason=\"draining\"}";

async fn send_all(client: &mut Client, frames: &[Value]) {
    for frame in frames {
        client.send(frame.clone()).await;
    }
}

fn assert_rate_limited(reply: &Value, id: Option<Value>) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "RATE_LIMITED", "{reply}");
    assert!(reply["message"].is_string(), "{reply}");
    match id {
        Some(id) => assert_eq!(reply["id"], id, "the error echoes the frame's id: {reply}"),
        None => assert!(reply.get("id").is_none(), "{reply}"),
    }
}

/// One fragment of a message: `Data::Text`/`Binary` to start, `Data::Continue` after.
fn fragment(payload: impl Into<Vec<u8>>, data: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(payload.into(), OpCode::Data(data), fin))
}

// ---- raw sockets ---------------------------------------------------------

/// Opens a TCP connection and upgrades it by hand. Returns the stream and any
/// bytes read past the 101 response (the start of the server's frames).
async fn raw_upgrade(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write upgrade");
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 1024]);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("upgrade response").expect("read");
        assert!(n > 0, "the server closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (stream, buf[end..].to_vec())
}

/// Reads whatever arrives for `wait`, expecting the connection to stay open.
async fn read_for(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("the connection stays open");
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    buf
}

/// Splits the server's (unmasked) frames out of `bytes`: (opcode, payload) pairs.
fn parse_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        // These tests only see frames shorter than 64 KiB.
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => (u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize, 4),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        assert_eq!(bytes[at + 1] & 0x80, 0, "server frames are not masked");
        if at + header + len > bytes.len() {
            break;
        }
        frames.push((opcode, bytes[at + header..at + header + len].to_vec()));
        at += header + len;
    }
    frames
}

/// A short (under 126 bytes) masked client text frame.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

// ---- rate limit ----------------------------------------------------------

#[tokio::test]
async fn a_burst_passes_then_frames_are_rate_limited_with_their_id() {
    let server = server_with(|c| rate_limits(c, 3, 10));
    let (mut client, _) = ws_connect(&server).await;
    let before = Snapshot::take(&server).await;
    // Sent back to back: at one frame per second no token returns meanwhile.
    send_all(&mut client, &[ping(json!(1)), ping(json!(2)), ping(json!(3)), ping(json!("a")), ping(json!("b"))]).await;
    client.send(json!({"type": "join", "room": "r", "id": "c"})).await;
    for id in [1, 2, 3] {
        assert_eq!(client.recv().await, json!({"type": "pong", "id": id}));
    }
    for id in ["a", "b", "c"] {
        assert_rate_limited(&client.recv().await, Some(json!(id)));
    }
    client.expect_silence(Duration::from_millis(200)).await;
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(RATE_LIMITED, 3.0), (RATE_CLOSES, 0.0)]);

    // The bucket refills at rate_per_sec: a second later a frame passes again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.request(ping(json!("later"))).await, json!({"type": "pong", "id": "later"}));
}

#[tokio::test]
async fn every_text_binary_and_ping_frame_takes_a_token_but_pongs_do_not() {
    let server = server_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 3;
    });
    let (mut client, _) = ws_connect(&server).await;
    // Unsolicited pongs are free; a ping takes the first of three tokens.
    for _ in 0..5 {
        client.send_message(Message::Pong(b"hi".to_vec().into())).await;
    }
    client.send_message(Message::Ping(b"hi".to_vec().into())).await;
    client.send_message(Message::Binary(vec![1, 2, 3].into())).await;
    client.send_text("{not json").await;
    client.send(ping(json!(7))).await;
    client.send_message(Message::Binary(vec![4].into())).await;
    let binary = client.recv().await;
    assert_eq!((binary["type"].as_str(), binary["code"].as_str()), (Some("error"), Some("BAD_REQUEST")), "{binary}");
    let invalid = client.recv().await;
    assert_eq!(invalid["code"], "INVALID_JSON", "{invalid}");
    assert_rate_limited(&client.recv().await, Some(json!(7)));
    assert_rate_limited(&client.recv().await, None);
    assert_eq!(Snapshot::take(&server).await.value(RATE_LIMITED), Some(2.0));
}

#[tokio::test]
async fn consecutive_strikes_close_1008_and_the_last_strike_sends_no_error() {
    let server = server_with(|c| rate_limits(c, 1, 3));
    let (mut client, _) = ws_connect(&server).await;
    let before = Snapshot::take(&server).await;
    send_all(&mut client, &[ping(json!(0)), ping(json!(1)), ping(json!(2)), ping(json!(3))]).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": 0}));
    assert_rate_limited(&client.recv().await, Some(json!(1)));
    assert_rate_limited(&client.recv().await, Some(json!(2)));
    match client.next_event().await {
        Event::Closed(Some((code, _))) => assert_eq!(code, 1008),
        other => panic!("the third strike closes with 1008 instead of answering; got {other:?}"),
    }
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(RATE_LIMITED, 3.0), (RATE_CLOSES, 1.0)]);
}

#[tokio::test]
async fn an_allowed_frame_resets_the_strikes() {
    // A bucket of one frame: whatever the pause, at most one frame passes at a time.
    let server = server_with(|c| {
        c.limits.rate_per_sec = 2;
        c.limits.rate_burst = 1;
        c.limits.rate_strikes = 3;
    });
    let (mut client, _) = ws_connect(&server).await;
    send_all(&mut client, &[ping(json!("ok1")), ping(json!("l1")), ping(json!("l2"))]).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "ok1"}));
    assert_rate_limited(&client.recv().await, Some(json!("l1")));
    assert_rate_limited(&client.recv().await, Some(json!("l2")));
    // Two strikes so far; wait out one token (500 ms at 2/s).
    tokio::time::sleep(Duration::from_millis(600)).await;
    send_all(&mut client, &[ping(json!("ok2")), ping(json!("l3")), ping(json!("l4")), ping(json!("l5"))]).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "ok2"}));
    assert_rate_limited(&client.recv().await, Some(json!("l3")));
    assert_rate_limited(&client.recv().await, Some(json!("l4")));
    assert_eq!(client.expect_close().await.0, 1008);
    let after = Snapshot::take(&server).await;
    assert_eq!((after.get(RATE_LIMITED), after.get(RATE_CLOSES)), (5.0, 1.0));
}

// ---- message size --------------------------------------------------------

#[tokio::test]
async fn a_frame_at_the_limit_passes_and_one_byte_more_closes_1009() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let (mut client, _) = ws_connect(&server).await;
    client.send_text(&padded_ping("fits", 1024)).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "fits"}));
    let before = Snapshot::take(&server).await;
    client.send_text(&padded_ping("big", 1025)).await;
    assert_eq!(client.expect_close().await.0, 1009);
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(OVERSIZED, 1.0)]);
}

#[tokio::test]
async fn fragments_are_reassembled_and_their_total_is_limited() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let (mut client, _) = ws_connect(&server).await;
    let text = padded_ping("frag", 900);
    client.send_message(fragment(&text.as_bytes()[..300], Data::Text, false)).await;
    client.send_message(fragment(&text.as_bytes()[300..600], Data::Continue, false)).await;
    client.send_message(fragment(&text.as_bytes()[600..], Data::Continue, true)).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "frag"}));

    // Each fragment is under the limit; together they are not. The server
    // closes as soon as the total passes the limit, before the message ends.
    let chunk = vec![b' '; 600];
    client.send_message(fragment(chunk.clone(), Data::Text, false)).await;
    client.send_message(fragment(chunk, Data::Continue, false)).await;
    assert_eq!(client.expect_close().await.0, 1009);
    assert_eq!(Snapshot::take(&server).await.get(OVERSIZED), 1.0);
}

#[tokio::test]
async fn a_fragmented_binary_message_over_the_limit_closes_1009_like_a_whole_one() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let (mut whole, _) = ws_connect(&server).await;
    whole.send_message(Message::Binary(vec![0; 1200].into())).await;
    assert_eq!(whole.expect_close().await.0, 1009);
    let (mut fragmented, _) = ws_connect(&server).await;
    let chunk = vec![0u8; 600];
    fragmented.send_message(fragment(chunk.clone(), Data::Binary, false)).await;
    fragmented.send_message(fragment(chunk, Data::Continue, true)).await;
    // An error frame (binary is BAD_REQUEST) may come first; the close must follow.
    assert_eq!(fragmented.expect_close().await.0, 1009);
    assert_eq!(Snapshot::take(&server).await.get(OVERSIZED), 2.0);
}

#[tokio::test]
async fn a_header_announcing_a_huge_payload_closes_1009_without_waiting_for_it() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let (mut stream, buf) = raw_upgrade(server.addr).await;
    // A masked text frame claiming 1 GiB, of which nothing follows.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).await.expect("write");
    let bytes = read_until_closed(&mut stream, buf, WAIT).await;
    let close = parse_frames(&bytes).into_iter().find(|(op, _)| *op == 8).expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1009);
    assert_eq!(Snapshot::take(&server).await.get(OVERSIZED), 1.0);
}

// ---- heartbeats ----------------------------------------------------------

fn fast_heartbeat(c: &mut herald::Config) {
    c.heartbeat.interval_ms = 100;
    c.heartbeat.timeout_ms = 400;
}

#[tokio::test]
async fn a_silent_client_that_never_answers_pings_is_dropped() {
    let server = server_with(fast_heartbeat);
    let (mut stream, buf) = raw_upgrade(server.addr).await;
    // Reading answers nothing: the server hears no pong and no frame.
    let bytes = read_until_closed(&mut stream, buf, Duration::from_secs(5)).await;
    let frames = parse_frames(&bytes);
    assert_eq!(frames.first().map(|f| f.0), Some(1), "welcome comes first");
    assert!(frames.iter().any(|(op, _)| *op == 9), "the server pinged before giving up: {frames:?}");
    if let Some((_, payload)) = frames.iter().find(|(op, _)| *op == 8) {
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1000, "{:?}", String::from_utf8_lossy(payload));
    }
    let server_addr = server.addr;
    let counted =
        eventually(WAIT, || async move { Snapshot::take(&server_addr).await.value(HEARTBEAT) == Some(1.0) }).await;
    assert!(counted, "{HEARTBEAT} is 1");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = server_with(fast_heartbeat);
    let (mut client, welcome) = ws_connect(&server).await;
    assert_eq!(welcome["heartbeat_ms"], 100);
    // Reading lets tungstenite answer each ping with a pong; no frame is sent.
    client.expect_silence(Duration::from_millis(1500)).await;
    assert_eq!(client.request(ping(json!("still"))).await, json!({"type": "pong", "id": "still"}));
    assert_eq!(Snapshot::take(&server).await.get(HEARTBEAT), 0.0);
}

#[tokio::test]
async fn frames_alone_keep_a_connection_alive_without_pongs() {
    let server = server_with(fast_heartbeat);
    let (mut stream, _) = raw_upgrade(server.addr).await;
    // Three heartbeat timeouts long; the last frame goes just before the read,
    // which ends well before that frame's silence could time out.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&client_text_frame(br#"{"type":"ping"}"#)).await.expect("write");
    }
    let frames = parse_frames(&read_for(&mut stream, Duration::from_millis(200)).await);
    assert!(frames.iter().all(|(op, _)| *op != 8), "no close: {frames:?}");
    assert_eq!(frames.iter().filter(|(op, p)| *op == 1 && p.starts_with(br#"{"type":"pong""#)).count(), 12);
    assert_eq!(Snapshot::take(&server).await.get(HEARTBEAT), 0.0);
}

// ---- connection limit and origin ----------------------------------------

/// The HTTP status an upgrade to `url` was refused with.
async fn refused_status(url: &str, origin: Option<&str>) -> u16 {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

#[tokio::test]
async fn past_max_connections_upgrades_get_503_until_one_closes() {
    let server = server_with(|c| c.limits.max_connections = 2);
    let (first, _) = ws_connect(&server).await;
    let (mut second, _) = ws_connect(&server).await;
    let before = Snapshot::take(&server).await;
    assert_eq!(refused_status(&server.ws_url(), None).await, 503);
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(REFUSED_MAX, 1.0), (REFUSED_ORIGIN, 0.0), (ACCEPTED, 0.0)]);
    // Plain HTTP is not a WebSocket connection and is still served.
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    assert_eq!(second.request(ping(json!(2))).await, json!({"type": "pong", "id": 2}));

    first.close().await;
    let url = server.ws_url();
    let url = url.as_str();
    // Accepted and served: the new connection gets its `welcome`.
    let served = eventually(WAIT, || async move {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else { return false };
        let welcome = tokio::time::timeout(WAIT, ws.next()).await;
        matches!(welcome, Ok(Some(Ok(Message::Text(t)))) if t.contains("\"welcome\""))
    })
    .await;
    assert!(served, "a closed connection frees its slot");
}

#[tokio::test]
async fn only_allowed_origins_may_upgrade() {
    let server = server_with(|c| c.server.allowed_origins = vec!["https://good.example".into()]);
    let before = Snapshot::take(&server).await;
    assert_eq!(refused_status(&server.ws_url(), Some("https://evil.example")).await, 403);
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(REFUSED_ORIGIN, 1.0), (REFUSED_MAX, 0.0), (ACCEPTED, 0.0)]);
    // Exact match: neither a longer host nor another scheme passes.
    for origin in ["https://good.example.evil.com", "http://good.example", "https://good.example:8443", "null"] {
        assert_eq!(refused_status(&server.ws_url(), Some(origin)).await, 403, "{origin}");
    }
    assert_eq!(Snapshot::take(&server).await.get(REFUSED_ORIGIN), 5.0);

    let mut good = ws_connect_raw(&server.ws_url(), &[("origin", "https://good.example")]).await;
    assert_eq!(good.recv().await["type"], "welcome");
    assert_eq!(good.request(ping(json!("g"))).await, json!({"type": "pong", "id": "g"}));
    let (mut no_origin, _) = ws_connect(&server).await;
    assert_eq!(no_origin.request(ping(json!("n"))).await, json!({"type": "pong", "id": "n"}));
}

// ---- bad input and exact counters ---------------------------------------

#[tokio::test]
async fn after_a_barrage_of_bad_input_other_clients_are_served() {
    let server = server_with(|c| {
        rate_limits(c, 10, 5);
        c.limits.max_message_bytes = 4096;
    });
    // A flood: ten frames pass, the fifth strike after them closes.
    let (mut flooder, _) = ws_connect(&server).await;
    send_all(&mut flooder, &vec![json!({"type": "ping"}); 15]).await;
    assert_eq!(flooder.expect_close().await.0, 1008);
    // An oversized frame.
    let (mut big, _) = ws_connect(&server).await;
    big.send_text(&"x".repeat(5000)).await;
    assert_eq!(big.expect_close().await.0, 1009);
    // Errors of every kind, each answered, none fatal.
    let (mut garbage, _) = ws_connect(&server).await;
    for text in ["{", "[1,2]", "\"text\"", r#"{"type":42}"#, r#"{"type":"nope"}"#, r#"{"type":"join","room":""}"#] {
        garbage.send_text(text).await;
        assert_eq!(garbage.recv().await["type"], "error", "{text}");
    }
    garbage.send_message(Message::Binary(vec![0xff; 64].into())).await;
    assert_eq!(garbage.recv().await["code"], "BAD_REQUEST");
    let not_in_room = garbage.request(json!({"type": "publish", "room": "lobby", "data": 1})).await;
    assert_eq!(not_in_room["code"], "NOT_IN_ROOM");
    // Not HTTP at all.
    let mut junk = TcpStream::connect(server.addr).await.expect("connect");
    junk.write_all(b"\x00\x01\x02 not http\r\n\r\n").await.expect("write");
    read_until_closed(&mut junk, Vec::new(), WAIT).await;
    // An unmasked client frame breaks the protocol.
    let (mut unmasked, buf) = raw_upgrade(server.addr).await;
    unmasked.write_all(&[0x81, 0x02, b'{', b'}']).await.expect("write");
    read_until_closed(&mut unmasked, buf, WAIT).await;
    // An upgrade that never finishes, held open meanwhile.
    let mut half_open = TcpStream::connect(server.addr).await.expect("connect");
    half_open.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.expect("write");

    let (mut alice, mut bob) = (ws_connect_as(&server, "alice").await, ws_connect_as(&server, "bob").await);
    alice.join("lobby").await;
    bob.join("lobby").await;
    assert_eq!(alice.recv().await, json!({"type": "user_joined", "room": "lobby", "user": "bob"}));
    let ack = alice.request(json!({"type": "publish", "room": "lobby", "data": {"hi": 1}, "echo": false, "id": 1})).await;
    assert_eq!((ack["type"].as_str(), ack["id"].as_i64()), (Some("ack"), Some(1)), "{ack}");
    let message = bob.recv_type("message").await;
    assert_eq!((message["from"].as_str(), &message["data"]), (Some("alice"), &json!({"hi": 1})));
    assert_eq!(garbage.request(ping(json!("alive"))).await, json!({"type": "pong", "id": "alive"}));
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn counters_move_by_exactly_what_a_scripted_session_did() {
    let server = server_with(|c| {
        rate_limits(c, 2, 4);
        c.limits.max_message_bytes = 256;
    });
    let before = Snapshot::take(&server).await;
    // Three rate-limited frames, no close.
    let (mut a, _) = ws_connect(&server).await;
    send_all(&mut a, &(0..5).map(|i| ping(json!(i))).collect::<Vec<_>>()).await;
    let replies = [a.recv().await, a.recv().await, a.recv().await, a.recv().await, a.recv().await];
    assert_eq!(replies.iter().filter(|r| r["code"] == "RATE_LIMITED").count(), 3, "{replies:?}");
    // Four rate-limited frames, the last of which closes.
    let (mut b, _) = ws_connect(&server).await;
    send_all(&mut b, &(0..6).map(|i| ping(json!(i))).collect::<Vec<_>>()).await;
    assert_eq!(b.expect_close().await.0, 1008);
    // One oversized frame.
    let (mut c, _) = ws_connect(&server).await;
    c.send_text(&"y".repeat(300)).await;
    assert_eq!(c.expect_close().await.0, 1009);
    let after = Snapshot::take(&server).await;
    let none_refused = [(REFUSED_MAX, 0.0), (REFUSED_ORIGIN, 0.0), (REFUSED_DRAINING, 0.0)];
    assert_moved(&before, &after, &[(RATE_LIMITED, 7.0), (RATE_CLOSES, 1.0), (OVERSIZED, 1.0), (HEARTBEAT, 0.0)]);
    assert_moved(&before, &after, &[(ACCEPTED, 3.0)]);
    assert_moved(&before, &after, &none_refused);
}
