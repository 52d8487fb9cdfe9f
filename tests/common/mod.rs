//! Shared helpers of the integration tests: a real server on port 0, real
//! WebSocket clients over real sockets, token minting, and `eventually`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald::{Config, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// A config for tests: port 0, short timers, a known JWT secret.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.server.node_id = "test".into();
    config.server.workers = 2;
    config.auth.jwt_secret = SECRET.into();
    // Functional tests send quickly; the rate limit has tests of its own.
    config.limits.rate_per_sec = 100_000;
    config.limits.rate_burst = 100_000;
    config
}

/// A config with `auth.required = true`.
pub fn config_auth_required() -> Config {
    let mut config = config();
    config.auth.required = true;
    config.auth.timeout_ms = 300;
    config
}

/// A running server. It lives until the test process ends.
pub struct TestServer {
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// Starts a real server with `config` on its own thread and actix system.
pub fn start(config: Config) -> TestServer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let server = Server::bind(config).expect("server binds");
        tx.send(server.local_addr()).expect("test is waiting");
        server.run().expect("server runs");
    });
    TestServer { addr: rx.recv().expect("server started") }
}

/// Mints an HS256 token for `sub` signed with [`SECRET`], valid for an hour, plus `extra` claims.
pub fn token(sub: &str, extra: Value) -> String {
    token_with(json!({"sub": sub}), extra, SECRET)
}

/// Mints a token from `claims` merged with `extra` (and an `exp` an hour ahead unless given).
pub fn token_with(claims: Value, extra: Value, secret: &str) -> String {
    let mut claims = claims;
    let exp = herald::protocol::now_ms() / 1000 + 3600;
    claims.as_object_mut().unwrap().entry("exp").or_insert(json!(exp));
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            claims[k] = v;
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub struct Client {
    ws: Stream,
}

/// What a read ended with.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(Option<(u16, String)>),
}

impl Client {
    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.expect("send");
    }

    /// Sends any WebSocket message.
    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends any WebSocket message; false when the connection is already gone.
    pub async fn try_send_message(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// The next JSON frame or the close, within [`WAIT`]. Panics on timeout.
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(WAIT).await.expect("a frame or a close within the wait")
    }

    /// The next JSON frame or close within `wait`, or `None` if nothing came.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<Event> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Event::Closed(None)),
                Ok(Some(Err(_))) => return Some(Event::Closed(None)),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) => {
                    return Some(Event::Frame(serde_json::from_str(&text).expect("server frames are JSON")))
                }
                Message::Close(frame) => {
                    return Some(Event::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))))
                }
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame. Panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(v) => v,
            Event::Closed(c) => panic!("expected a frame, the connection closed: {c:?}"),
        }
    }

    /// Skips frames until one of type `ty` arrives, and returns it.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == ty {
                return frame;
            }
        }
    }

    /// Asserts that no frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(event) = self.next_event_within(wait).await {
            panic!("expected nothing, got {event:?}");
        }
    }

    /// Reads until the connection closes, returning the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_event().await {
                Event::Closed(Some(close)) => return close,
                Event::Closed(None) => panic!("connection ended without a close frame"),
                Event::Frame(_) => continue,
            }
        }
    }

    /// Sends `frame` and returns the next frame.
    pub async fn request(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.recv().await
    }

    /// Joins `room`, returning the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        let joined = self.request(json!({"type": "join", "room": room})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Wait for the server's answer so its cleanup has begun.
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// Opens a WebSocket to `url` with optional extra headers; does not read `welcome`.
pub async fn ws_connect_raw(url: &str, headers: &[(&str, &str)]) -> Client {
    let mut request = url.into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");
    Client { ws }
}

/// Connects as an anonymous client and reads `welcome`.
pub async fn ws_connect(server: &TestServer) -> (Client, Value) {
    let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Connects as `user` (token in `?token=`) and reads `welcome`.
pub async fn ws_connect_as(server: &TestServer, user: &str) -> Client {
    ws_connect_token(server, &token(user, json!({}))).await
}

/// Connects with `token` in `?token=` and reads `welcome`.
pub async fn ws_connect_token(server: &TestServer, token: &str) -> Client {
    let mut client = ws_connect_raw(&format!("{}?token={token}", server.ws_url()), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

/// Polls `cond` until it is true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 GET over a real socket: returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// A minimal HTTP/1.1 request: returns (status, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read");
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Series of the connection metrics, one per transport.
pub const OPEN_WS: &str = r#"herald_connections_open{transport="ws"}"#;
pub const OPEN_SSE: &str = r#"herald_connections_open{transport="sse"}"#;
pub const ACCEPTED_WS: &str = r#"herald_connections_accepted_total{transport="ws"}"#;
pub const ACCEPTED_SSE: &str = r#"herald_connections_accepted_total{transport="sse"}"#;

/// The value of an unlabelled (or exactly labelled) series in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A `/metrics` exposition read at one moment.
pub struct Snapshot(pub String);

impl Snapshot {
    pub async fn take(server: &TestServer) -> Self {
        let (status, body) = http_get(server.addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        Snapshot(body)
    }

    /// The value of `series`; panics when it is not exported.
    pub fn get(&self, series: &str) -> f64 {
        metric(&self.0, series).unwrap_or_else(|| panic!("{series} is missing from /metrics:\n{}", self.0))
    }
}

/// Asserts how far each series moved between two snapshots.
#[track_caller]
pub fn assert_moved(before: &Snapshot, after: &Snapshot, expected: &[(&str, f64)]) {
    for (series, delta) in expected {
        assert_eq!(after.get(series) - before.get(series), *delta, "change of {series}");
    }
}

/// Calls the server API: `key` goes in `Authorization: Bearer` (none: no header).
/// Returns the status and the JSON body (every API answer has one).
pub async fn api(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let (status, text) = http_request(addr, method, path, &headers, body).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path} -> {status}: body is not JSON: {text:?}"));
    (status, json)
}

/// A Server-Sent Events client over a real socket, decoding the chunked
/// response body itself.
pub struct SseClient {
    stream: tokio::io::BufReader<TcpStream>,
    /// Decoded body bytes not yet consumed as lines.
    body: Vec<u8>,
    ended: bool,
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

/// One item of an event stream.
#[derive(Debug, PartialEq)]
pub enum SseItem {
    /// An event's `data`, parsed as JSON.
    Data(Value),
    /// A comment line, without its `:`.
    Comment(String),
    /// The stream ended.
    End,
}

/// Options for [`sse_open`].
#[derive(Default)]
pub struct SseOpen<'a> {
    pub headers: &'a [(&'a str, &'a str)],
    /// A small receive buffer makes a client that stops reading stall its
    /// server soon.
    pub recv_buffer: Option<u32>,
}

impl SseClient {
    /// `GET path` and reads the response head.
    pub async fn open(addr: SocketAddr, path: &str, options: SseOpen<'_>) -> SseClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in options.headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut client =
            SseClient { stream: tokio::io::BufReader::new(stream), body: Vec::new(), ended: false, status: 0, headers: Vec::new() };
        let status_line = client.socket_line().await;
        client.status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        loop {
            let line = client.socket_line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            client.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The JSON body of a refused request.
    pub async fn error_body(mut self) -> Value {
        let len: usize = self.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
        let mut body = vec![0; len];
        tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_exact(&mut self.stream, &mut body))
            .await
            .expect("body in time")
            .expect("body");
        serde_json::from_slice(&body).expect("a JSON error body")
    }

    async fn socket_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(WAIT, tokio::io::AsyncBufReadExt::read_line(&mut self.stream, &mut line))
            .await
            .expect("a line in time")
            .expect("read");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Reads one more chunk of the body; false at its end.
    async fn read_chunk(&mut self) -> bool {
        let size = self.socket_line().await;
        let size = match usize::from_str_radix(size.trim(), 16) {
            Ok(size) => size,
            // The connection closed without a last chunk.
            Err(_) => return false,
        };
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0; size + 2];
        if tokio::io::AsyncReadExt::read_exact(&mut self.stream, &mut chunk).await.is_err() {
            return false;
        }
        self.body.extend_from_slice(&chunk[..size]);
        true
    }

    async fn body_line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.body.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=at).collect();
                return Some(String::from_utf8(line).expect("utf-8").trim_end_matches(['\r', '\n']).to_owned());
            }
            if self.ended || !self.read_chunk().await {
                self.ended = true;
                return None;
            }
        }
    }

    /// The next event or comment, read for at most `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseItem> {
        tokio::time::timeout(wait, async {
            let mut data: Vec<String> = Vec::new();
            loop {
                let Some(line) = self.body_line().await else { return SseItem::End };
                if line.is_empty() {
                    if !data.is_empty() {
                        return SseItem::Data(serde_json::from_str(&data.join("\n")).expect("data is JSON"));
                    }
                } else if let Some(comment) = line.strip_prefix(':') {
                    return SseItem::Comment(comment.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
        })
        .await
        .ok()
    }

    /// The next event's data within [`WAIT`], skipping comments. Panics otherwise.
    pub async fn next_data(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                Some(SseItem::Data(value)) => return value,
                Some(SseItem::Comment(_)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// Asserts no event comes within `wait` (comments may).
    pub async fn expect_no_data(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(item) = self.next_within(deadline.saturating_duration_since(Instant::now())).await {
            assert!(matches!(item, SseItem::Comment(_)), "expected no event, got {item:?}");
        }
    }
}

/// Opens `/sse?<query>` with no extra options.
pub async fn sse_open(server: &TestServer, query: &str) -> SseClient {
    SseClient::open(server.addr, &format!("/sse?{query}"), SseOpen::default()).await
}

/// A real `redis-server` on a free port of its own, stopped when dropped.
/// Persistence is off: every start is an empty Redis.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (on the same port) if stopped; returns once it accepts connections.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (the README's test command installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL): clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects as an anonymous client over a socket whose receive buffer is
/// `size` bytes, and reads `welcome`. A client that then stops reading fills
/// its server-side buffers after little traffic.
pub async fn ws_connect_recv_buffer(server: &TestServer, size: u32) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket upgrade");
    let mut client = Client { ws };
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

/// Reads until the server ends the connection (EOF or reset); panics if it
/// is still open after `wait`.
pub async fn read_until_closed(stream: &mut TcpStream, mut buf: Vec<u8>, wait: Duration) -> Vec<u8> {
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.expect("the server ends the connection");
    buf
}

/// Starts a server with the test config as `edit` leaves it.
pub fn server_with(edit: impl FnOnce(&mut herald::Config)) -> TestServer {
    let mut config = config();
    edit(&mut config);
    start(config)
}

/// A `ping` frame with `id`.
pub fn ping(id: Value) -> Value {
    json!({"type": "ping", "id": id})
}

/// A text frame of exactly `len` bytes: a `ping` padded with an ignored field.
pub fn padded_ping(id: &str, len: usize) -> String {
    let head = format!(r#"{{"type":"ping","id":"{id}","pad":""#);
    let text = format!("{head}{}\"}}", "x".repeat(len - head.len() - 2));
    assert_eq!(text.len(), len);
    text
}
