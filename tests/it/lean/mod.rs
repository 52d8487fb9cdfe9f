//! The connection path's defences, over real sockets. Here the raw-socket
//! fixtures; [`handshake`] the WebSocket handshake's checks, the handshake
//! timeout (silent and trickling clients) and the request head limit;
//! [`frames`] what the rate limit counts (pings; the fragments of one
//! message), UTF-8 checks and closes; [`limits`] slow consumers bounded by
//! bytes, stalled API bodies, sockets still in the handshake counted toward
//! `limits.max_connections`, and the close grace kept by a connection's timer.

mod frames;
mod handshake;
mod limits;

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
