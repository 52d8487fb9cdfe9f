//! The connection path's defences, over real sockets: the WebSocket
//! handshake's checks, the handshake timeout (silent and trickling clients,
//! stalled API bodies), the request head limit, what the rate limit counts
//! (pings; the fragments of one message), UTF-8 checks, slow consumers bounded
//! by bytes, sockets still in the handshake counted toward
//! `limits.max_connections`, and the close grace kept by a connection's timer.

use crate::support::*;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};

const RATE_CLOSES: &str = r#"herald_connections_dropped_total{reason="rate_limit"}"#;
const SLOW_DROPS: &str = r#"herald_connections_dropped_total{reason="slow_consumer"}"#;
/// The RFC 6455 example key; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const API_KEY: &str = "lean-key";
/// How long past `server.handshake_timeout_ms` a socket may take to be dropped.
const DROPPED_WITHIN: Duration = Duration::from_secs(3);

/// `text` as one message in `count` fragments: a text frame, then continuations.
fn fragments(text: &str, count: usize) -> Vec<Message> {
    let (bytes, size) = (text.as_bytes(), text.len() / count);
    (0..count)
        .map(|i| {
            let last = i == count - 1;
            let chunk = &bytes[i * size..if last { bytes.len() } else { (i + 1) * size }];
            let data = if i == 0 { Data::Text } else { Data::Continue };
            Message::Frame(Frame::message(chunk.to_vec(), OpCode::Data(data), last))
        })
        .collect()
}

// ---- raw sockets ---------------------------------------------------------

/// An upgrade request for `/ws` with `extra` header lines (each ending in CRLF).
fn upgrade(version: &str, key: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    )
}

/// A response head read off a raw socket, and the bytes that came after it.
struct Head {
    status: u16,
    text: String,
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` on a fresh connection and reads the response head.
async fn exchange(addr: SocketAddr, request: &str) -> (TcpStream, Head) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server that refuses early may stop reading before a large request is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("a response in time").expect("read");
        assert!(n > 0, "closed before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    (stream, Head { status, text, rest: buf[end..].to_vec() })
}

/// Reads until the server drops the connection: the end of the stream, a
/// reset, or a whole 408 response head. Panics on any other answer, or if
/// none of these comes by `deadline`.
async fn expect_dropped(stream: &mut (impl AsyncRead + Unpin), deadline: Instant) {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout_at(deadline, read).await.expect("the server drops the connection in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.split(' ').nth(1) == Some("408"), "dropped with 408 or nothing: {text:?}");
}

/// A masked client frame: `opcode` 1 text, 0 continuation; `fin` on the last fragment.
fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![if fin { 0x80 | opcode } else { opcode }];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).expect("under 64 KiB").to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Takes the first whole server frame off `buf`: (opcode, payload).
fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let second = *buf.get(1)?;
    assert_eq!(second & 0x80, 0, "server frames are not masked");
    let (len, header) = match second & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let frame: Vec<u8> = buf.drain(..header + len).collect();
    Some((frame[0] & 0x0f, frame[header..].to_vec()))
}

/// The next server frame, reading into `buf` as needed; `None` when the connection ends.
async fn next_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = take_frame(buf) {
            return Some(frame);
        }
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("a frame or the end in time") {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The next text frame, as JSON.
async fn next_text(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Value {
    loop {
        match next_frame(stream, buf).await {
            Some((1, payload)) => return serde_json::from_slice(&payload).expect("server frames are JSON"),
            Some(_) => continue,
            None => panic!("the connection ended before a text frame"),
        }
    }
}

/// The code of the server's close frame; `None` if the connection ends without one.
async fn close_code(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    while let Some((opcode, payload)) = next_frame(stream, buf).await {
        if opcode == 8 {
            return payload.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]]));
        }
    }
    None
}

/// Upgrades a fresh connection by hand and reads `welcome`; returns the
/// stream and any bytes read past it.
async fn raw_ws(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let (mut stream, head) = exchange(addr, &upgrade("13", KEY, "")).await;
    assert_eq!(head.status, 101, "{}", head.text);
    let mut buf = head.rest;
    let welcome = next_text(&mut stream, &mut buf).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (stream, buf)
}

/// Whether an upgrade to `url` is served: true once its `welcome` arrives,
/// false when it is refused with 503 or the connection ends before `welcome`.
async fn upgrade_served(url: &str) -> bool {
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503, "an upgrade over the limit is refused with 503");
            return false;
        }
        Err(_) => return false,
    };
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("welcome or the end in time") {
            Some(Ok(Message::Text(text))) => return text.contains(r#""welcome""#),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return false,
            Some(Ok(_)) => continue,
        }
    }
}

// ---- handshake -----------------------------------------------------------

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

#[tokio::test]
async fn websocket_pings_take_rate_tokens_and_a_ping_flood_closes_1008() {
    let server = server_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 1;
        c.limits.rate_strikes = 3;
    });
    let (mut client, _) = ws_connect(&server).await;
    let before = Snapshot::take(&server).await;
    for _ in 0..10 {
        if !client.try_send_message(Message::Ping(b"flood".to_vec().into())).await {
            break;
        }
    }
    assert_eq!(client.expect_close().await.0, 1008);
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(RATE_CLOSES, 1.0)]);
}

#[tokio::test]
async fn a_message_in_21_fragments_takes_one_rate_token() {
    let server = server_with(|c| {
        c.limits.rate_per_sec = 10;
        c.limits.rate_burst = 20;
    });
    let (mut client, _) = ws_connect(&server).await;
    for fragment in fragments(&padded_ping("frag", 2100), 21) {
        client.send_message(fragment).await;
    }
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "frag"}));
    // No RATE_LIMITED error for any of the fragments.
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_message_in_more_than_128_fragments_closes_1008() {
    let server = start(config());
    let (mut client, _) = ws_connect(&server).await;
    for fragment in fragments(&padded_ping("most", 1280), 128) {
        client.send_message(fragment).await;
    }
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "most"}));
    for fragment in fragments(&padded_ping("more", 1290), 129) {
        if !client.try_send_message(fragment).await {
            break;
        }
    }
    assert_eq!(client.expect_close().await, (1008, "too many fragments".to_owned()));
}

// ---- UTF-8 ---------------------------------------------------------------

#[tokio::test]
async fn text_that_is_not_utf8_closes_1007_whole_or_fragmented() {
    let server = start(config());
    let (mut whole, mut buf) = raw_ws(server.addr).await;
    whole.write_all(&client_frame(1, true, b"{\"type\":\"ping\",\"id\":\"\xff\"}")).await.expect("write");
    assert_eq!(close_code(&mut whole, &mut buf).await, Some(1007));

    let (mut split, mut buf) = raw_ws(server.addr).await;
    // "é" (c3 a9) cut between two fragments is valid once reassembled...
    let valid = [client_frame(1, false, b"{\"type\":\"ping\",\"id\":\"\xc3"), client_frame(0, true, b"\xa9\"}")];
    split.write_all(&valid.concat()).await.expect("write");
    assert_eq!(next_text(&mut split, &mut buf).await, json!({"type": "pong", "id": "é"}));
    // ...and c3 followed by 28 is not.
    let invalid = [client_frame(1, false, b"{\"type\":\"ping\",\"id\":\"\xc3"), client_frame(0, true, b"\x28\"}")];
    split.write_all(&invalid.concat()).await.expect("write");
    assert_eq!(close_code(&mut split, &mut buf).await, Some(1007));
}

// ---- closing -------------------------------------------------------------

#[tokio::test]
async fn a_close_is_answered_with_its_code_or_none_and_a_code_no_endpoint_sends_closes_1002() {
    let server = start(config());
    // A close without a code is answered without one: 1005 never goes on the wire.
    let (mut bare, mut buf) = raw_ws(server.addr).await;
    bare.write_all(&client_frame(8, true, b"")).await.expect("write");
    assert_eq!(next_frame(&mut bare, &mut buf).await, Some((8, Vec::new())));

    let (mut coded, mut buf) = raw_ws(server.addr).await;
    coded.write_all(&client_frame(8, true, &[&4000u16.to_be_bytes()[..], b"bye"].concat())).await.expect("write");
    assert_eq!(close_code(&mut coded, &mut buf).await, Some(4000));

    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        let (mut bad, mut buf) = raw_ws(server.addr).await;
        bad.write_all(&client_frame(8, true, &code.to_be_bytes())).await.expect("write");
        assert_eq!(close_code(&mut bad, &mut buf).await, Some(1002), "a close with code {code}");
    }
}

// ---- slow consumers ------------------------------------------------------

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
