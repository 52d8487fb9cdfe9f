//! Socket.IO at `/socket.io/`, at the edges the official client does not
//! reach: raw Engine.IO requests over real sockets (long polling by hand,
//! WebSockets speaking Engine.IO text packets), so that every error code,
//! timeout, limit and metric of the endpoint is pinned down exactly. The
//! official client's own tests are in `tests/socketio/`.

use crate::support::*;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const OPEN_SIO: &str = r#"herald_connections_open{transport="socketio"}"#;
const ACCEPTED_SIO: &str = r#"herald_connections_accepted_total{transport="socketio"}"#;
const RECEIVED_BYTES_SIO: &str = r#"herald_transport_received_bytes_total{transport="socketio"}"#;
const SLOW_DROPPED: &str = r#"herald_connections_dropped_total{reason="slow_consumer"}"#;
const HEARTBEAT_DROPPED: &str = r#"herald_connections_dropped_total{reason="heartbeat"}"#;
const OVERSIZED: &str = r#"herald_frames_dropped_total{reason="size"}"#;
const API_KEY: &str = "socketio-key";

/// The record separator between the packets of a polling body.
const SEPARATOR: char = '\x1e';

// ---- packets ---------------------------------------------------------------

/// The JSON of an Engine.IO open packet (`0{...}`).
fn open_packet(packet: &str) -> Value {
    let body = packet.strip_prefix('0').unwrap_or_else(|| panic!("expected an open packet, got {packet:?}"));
    serde_json::from_str(body).unwrap_or_else(|_| panic!("the open packet is not JSON: {packet:?}"))
}

/// A server EVENT `42[name, args...]`: its name and arguments.
fn event(packet: &str) -> Option<(String, Vec<Value>)> {
    let rest = packet.strip_prefix("42")?;
    if !rest.starts_with('[') {
        return None;
    }
    let mut args: Vec<Value> = serde_json::from_str(rest).ok()?;
    let name = args.first()?.as_str()?.to_owned();
    args.remove(0);
    Some((name, args))
}

/// An ACK `43<id>[args...]`: its id and arguments.
fn ack(packet: &str) -> Option<(u64, Vec<Value>)> {
    let rest = packet.strip_prefix("43")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok()?;
    let args = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, args))
}

/// The single argument of the ACK `packet` for `id`; panics otherwise.
#[track_caller]
fn ack_arg(packet: &str, id: u64) -> Value {
    let (got, mut args) = ack(packet).unwrap_or_else(|| panic!("expected ACK {id}, got {packet:?}"));
    assert_eq!(got, id, "{packet}");
    assert_eq!(args.len(), 1, "an ACK carries one argument: {packet}");
    args.remove(0)
}

/// The argument of the `error` EVENT `packet`; panics otherwise.
#[track_caller]
fn error_event(packet: &str) -> Value {
    match event(packet) {
        Some((name, args)) if name == "error" && args.len() == 1 => args[0].clone(),
        _ => panic!("expected an error event, got {packet:?}"),
    }
}

/// The CONNECT reply `40{"sid","pid"}`: its JSON; panics on anything else.
#[track_caller]
fn connected(packet: &str) -> Value {
    let body = packet.strip_prefix("40").unwrap_or_else(|| panic!("expected 40{{...}}, got {packet:?}"));
    let reply: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("expected 40{{...}}, got {packet:?}"));
    assert!(reply["sid"].as_str().is_some_and(|s| !s.is_empty()), "{packet}");
    assert!(reply["pid"].as_str().is_some_and(|s| !s.is_empty()), "{packet}");
    reply
}

/// The CONNECT packet carrying `token` in its auth object.
fn connect_with(token: &str) -> String {
    format!("40{}", json!({ "token": token }))
}

/// An EVENT `name` with `arg` and, when given, the acknowledgement id `id`.
fn emit(name: &str, arg: Value, id: Option<u64>) -> String {
    let id = id.map(|id| id.to_string()).unwrap_or_default();
    format!("42{id}{}", json!([name, arg]))
}

// ---- a Socket.IO session over a WebSocket ------------------------------------

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a read ended with.
#[derive(Debug)]
enum Read {
    Packet(String),
    /// The close frame's code and reason, or `None` when the socket just ended.
    Closed(Option<(u16, String)>),
}

/// A client speaking Engine.IO text packets over a WebSocket to `/socket.io/`.
struct SioWs {
    ws: Stream,
}

fn sio_url(addr: SocketAddr, query: &str) -> String {
    format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}")
}

impl SioWs {
    /// Opens a session (`query` is appended to the URL, e.g. `&token=...`)
    /// and reads its open packet.
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> (Self, Value) {
        let mut request = sio_url(addr, query).into_client_request().expect("valid url");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");
        Self::opened(ws).await
    }

    /// Opens a session over a socket whose receive buffer is `size` bytes.
    async fn open_recv_buffer(addr: SocketAddr, size: u32) -> (Self, Value) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(sio_url(addr, ""), MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket upgrade");
        Self::opened(ws).await
    }

    async fn opened(ws: Stream) -> (Self, Value) {
        let mut client = Self { ws };
        let first = client.recv().await;
        (client, open_packet(&first))
    }

    /// Opens a session and connects it with `token` in the CONNECT's auth.
    async fn connect_as(addr: SocketAddr, user: &str) -> Self {
        let (mut client, _) = Self::open(addr, "", &[]).await;
        client.send(&connect_with(&token(user, json!({})))).await;
        connected(&client.recv().await);
        client
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.expect("send");
    }

    async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::Binary(bytes.to_vec().into())).await.expect("send");
    }

    /// The next packet or the end of the session within `wait` (`None`:
    /// nothing came). Engine.IO pings are answered and skipped.
    async fn next_within(&mut self, wait: Duration) -> Option<Read> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Read::Closed(None)),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) if text.as_str() == "2" => {
                    let _ = self.ws.send(Message::Text("3".into())).await;
                }
                Message::Text(text) => return Some(Read::Packet(text.to_string())),
                Message::Close(frame) => {
                    return Some(Read::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))))
                }
                Message::Binary(_) => panic!("the server sent a binary message"),
                _ => continue,
            }
        }
    }

    /// The next packet within [`WAIT`]; panics on a close or a timeout.
    async fn recv(&mut self) -> String {
        match self.next_within(WAIT).await {
            Some(Read::Packet(packet)) => packet,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Sends `packet` and returns the next packet.
    async fn request(&mut self, packet: &str) -> String {
        self.send(packet).await;
        self.recv().await
    }

    /// Skips packets until one satisfies `pred`, and returns it.
    async fn recv_until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let packet = self.recv().await;
            if pred(&packet) {
                return packet;
            }
        }
    }

    /// Reads until the session ends: its close, if it sent one.
    async fn until_closed(&mut self, wait: Duration) -> Option<(u16, String)> {
        loop {
            match self.next_within(wait).await {
                Some(Read::Packet(_)) => continue,
                Some(Read::Closed(close)) => return close,
                None => panic!("the session is still open after {wait:?}"),
            }
        }
    }

    /// Joins `room` with acknowledgement `id`; the `joined` reply.
    async fn join(&mut self, room: &str, id: u64) -> Value {
        self.send(&emit("join", json!({ "room": room }), Some(id))).await;
        let packet = self.recv_until(|p| p.starts_with("43")).await;
        let joined = ack_arg(&packet, id);
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }
}

// ---- a long-polling session, by hand -----------------------------------------

/// A long-polling Engine.IO session driven with raw HTTP requests.
struct Poller {
    addr: SocketAddr,
    sid: String,
    /// Packets polled after the one a read waited for, for the next reads.
    early: VecDeque<String>,
}

/// `GET` or `POST` on `/socket.io/` with `query`: (status, body).
async fn eio(addr: SocketAddr, method: &str, query: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    http_request(addr, method, &format!("/socket.io/?{query}"), headers, body).await
}

/// Asserts an Engine.IO error answer: 400 and `{"code","message"}`.
#[track_caller]
fn assert_engine_error((status, body): &(u16, String), code: u64, message: &str) {
    assert_eq!(*status, 400, "{body}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert_eq!(body, json!({ "code": code, "message": message }));
}

/// Whether an answer is Engine.IO's "Session ID unknown".
fn is_unknown_sid((status, body): &(u16, String)) -> bool {
    *status == 400 && serde_json::from_str::<Value>(body).is_ok_and(|b| b["code"] == 1)
}

impl Poller {
    /// The handshake (`query` appended, e.g. `&token=...`): the session and
    /// its open packet.
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> (Self, Value) {
        let (status, body) = eio(addr, "GET", &format!("EIO=4&transport=polling{query}"), headers, "").await;
        assert_eq!(status, 200, "{body}");
        let open = open_packet(&body);
        let sid = open["sid"].as_str().expect("sid").to_owned();
        (Self { addr, sid, early: VecDeque::new() }, open)
    }

    /// Opens a session and connects it with `token` in the CONNECT's auth.
    async fn connect_as(addr: SocketAddr, user: &str) -> Self {
        let (mut poller, _) = Self::open(addr, "", &[]).await;
        poller.post(&[&connect_with(&token(user, json!({})))]).await;
        let packets = poller.until(|p| p.starts_with("40")).await;
        connected(packets.last().unwrap());
        poller
    }

    fn query(&self) -> String {
        format!("EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn get(&self) -> (u16, String) {
        eio(self.addr, "GET", &self.query(), &[], "").await
    }

    /// POSTs `packets` in one body; must answer 200.
    async fn post(&self, packets: &[&str]) {
        let (status, body) = self.try_post(&packets.join(&SEPARATOR.to_string())).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn try_post(&self, body: &str) -> (u16, String) {
        eio(self.addr, "POST", &self.query(), &[("Content-Type", "text/plain;charset=UTF-8")], body).await
    }

    /// One poll, which must answer 200: its packets.
    async fn poll(&self) -> Vec<String> {
        let (status, body) = self.get().await;
        assert_eq!(status, 200, "{body}");
        body.split(SEPARATOR).map(str::to_owned).collect()
    }

    /// Polls until a packet satisfies `pred`: every packet read, that one
    /// last (pings are answered and left out). What came after it in the
    /// same body is kept for the next call.
    async fn until(&mut self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            if self.early.is_empty() {
                self.early.extend(self.poll().await);
            }
            while let Some(packet) = self.early.pop_front() {
                if packet == "2" {
                    self.post(&["3"]).await;
                    continue;
                }
                let done = pred(&packet);
                got.push(packet);
                if done {
                    return got;
                }
            }
        }
    }
}

/// A WebSocket upgrade request for `/socket.io/?<query>` over a raw
/// socket: the answer's status line and body (when it has one).
async fn raw_upgrade(addr: SocketAddr, query: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /socket.io/?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return (head.lines().next().unwrap_or_default().to_owned(), body.to_owned());
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!("the answer ended early: {text:?}"),
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("an answer in time")
}

// ---- metrics -----------------------------------------------------------------

/// Waits until every series has its value; panics with the exposition if not.
async fn settle(server: &TestServer, expected: &[(&str, f64)]) {
    let reached = eventually(WAIT, || async {
        let now = Snapshot::take(server).await;
        expected.iter().all(|(series, value)| now.value(series) == Some(*value))
    })
    .await;
    if !reached {
        panic!("expected {expected:?}:\n{}", Snapshot::take(server).await.0);
    }
}

/// A server requiring auth, with a short `auth.timeout_ms` (long enough
/// for a refused CONNECT to be answered first).
fn auth_server() -> TestServer {
    let mut config = config_auth_required();
    config.auth.timeout_ms = 1000;
    start(config)
}

// ---- the endpoint --------------------------------------------------------------

#[tokio::test]
async fn with_socketio_disabled_the_endpoint_is_404_and_upgrades_nothing() {
    let server = server_with(|c| c.socketio.enabled = false);
    let (status, _) = eio(server.addr, "GET", "EIO=4&transport=polling", &[], "").await;
    assert_eq!(status, 404);
    let (status, _) = eio(server.addr, "POST", "EIO=4&transport=polling&sid=x", &[], "40").await;
    assert_eq!(status, 404);

    let (status, _) = raw_upgrade(server.addr, "EIO=4&transport=websocket").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(Snapshot::take(&server).await.get(ACCEPTED_SIO), 0.0);
}

#[tokio::test]
async fn requests_engine_io_cannot_serve_get_its_error_codes() {
    let server = start(config());
    let addr = server.addr;
    for query in ["EIO=3&transport=polling", "transport=polling", "EIO=5&transport=polling"] {
        assert_engine_error(&eio(addr, "GET", query, &[], "").await, 5, "Unsupported protocol version");
    }
    assert_engine_error(&eio(addr, "GET", "EIO=4&transport=flashsocket", &[], "").await, 0, "Transport unknown");
    assert_engine_error(&eio(addr, "GET", "EIO=4", &[], "").await, 0, "Transport unknown");
    let unknown = "EIO=4&transport=polling&sid=nosuchsession";
    assert_engine_error(&eio(addr, "GET", unknown, &[], "").await, 1, "Session ID unknown");
    assert_engine_error(&eio(addr, "POST", unknown, &[], "40").await, 1, "Session ID unknown");
    assert_engine_error(&eio(addr, "POST", "EIO=4&transport=polling", &[], "40").await, 2, "Bad handshake method");

    // The same checks guard the WebSocket transport, before any upgrade.
    for (query, code, message) in [
        ("EIO=3&transport=websocket", 5, "Unsupported protocol version"),
        ("EIO=4&transport=websocket&sid=nosuchsession", 1, "Session ID unknown"),
    ] {
        let (status, body) = raw_upgrade(addr, query).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{query}: {status}");
        assert_engine_error(&(400, body), code, message);
    }
    assert_eq!(Snapshot::take(&server).await.get(ACCEPTED_SIO), 0.0, "no session was opened");
}

#[tokio::test]
async fn an_origin_not_allowed_is_refused_with_code_4() {
    let server = server_with(|c| c.server.allowed_origins = vec!["https://good.example".into()]);
    let addr = server.addr;
    let evil = [("Origin", "https://evil.example")];
    assert_eq!(eio(addr, "GET", "EIO=4&transport=polling", &evil, "").await, (403, r#"{"code":4,"message":"Forbidden"}"#.into()));
    let (mut poller, _) = Poller::open(addr, "", &[("Origin", "https://good.example")]).await;
    // A session's requests are checked too, not only its handshake.
    assert_eq!(eio(addr, "POST", &poller.query(), &evil, "40").await.0, 403);
    assert_eq!(eio(addr, "GET", &poller.query(), &evil, "").await.0, 403);
    poller.post(&["40"]).await;
    connected(poller.until(|p| p.starts_with("40")).await.last().unwrap());
    let refused = Snapshot::take(&server).await.get(r#"herald_connections_refused_total{reason="origin"}"#);
    assert!(refused >= 1.0, "refusals are counted");
}

#[tokio::test]
async fn a_second_poll_while_one_is_held_is_refused_with_code_3() {
    let server = start(config());
    let (poller, _) = Poller::open(server.addr, "", &[]).await;
    let query = poller.query();
    let addr = server.addr;
    // Nothing waits for either: one is held, the other (whichever comes
    // second) refused; the CONNECT's reply then ends the one held.
    let first = tokio::spawn({
        let query = query.clone();
        async move { eio(addr, "GET", &query, &[], "").await }
    });
    let second = tokio::spawn(async move { eio(addr, "GET", &query, &[], "").await });
    let (refused, held) = match futures_util::future::select(first, second).await {
        futures_util::future::Either::Left((answer, other)) | futures_util::future::Either::Right((answer, other)) => {
            (answer.unwrap(), other)
        }
    };
    assert_engine_error(&refused, 3, "Bad request");
    poller.post(&["40"]).await;
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    connected(&body);
}

#[tokio::test]
async fn the_open_packet_says_the_configured_heartbeat_and_payload_limit() {
    let server = server_with(|c| {
        c.heartbeat.interval_ms = 2000;
        c.heartbeat.timeout_ms = 5000;
        c.limits.max_message_bytes = 4096;
    });
    let (poller, polling) = Poller::open(server.addr, "", &[]).await;
    assert!(!poller.sid.is_empty());
    assert_eq!(polling["upgrades"], json!(["websocket"]), "{polling}");
    assert_eq!(polling["pingInterval"], 2000, "{polling}");
    assert_eq!(polling["pingTimeout"], 3000, "timeout less interval: {polling}");
    assert_eq!(polling["maxPayload"], 4096, "{polling}");

    let (_ws, open) = SioWs::open(server.addr, "", &[]).await;
    assert!(open["sid"].as_str().is_some_and(|sid| !sid.is_empty() && sid != poller.sid), "{open}");
    assert_eq!(open["upgrades"], json!([]), "a WebSocket has nothing to upgrade to: {open}");
    assert_eq!((open["pingInterval"].clone(), open["pingTimeout"].clone()), (json!(2000), json!(3000)), "{open}");
    assert_eq!(open["maxPayload"], 4096, "{open}");
}

// ---- signing in ----------------------------------------------------------------

#[tokio::test]
async fn connect_signs_in_with_its_auth_token_and_a_refused_connect_may_be_retried() {
    let server = start(config_auth_required());
    let (mut client, _) = SioWs::open(server.addr, "", &[]).await;
    assert_eq!(client.request("40").await, r#"44{"message":"not authenticated"}"#);
    assert_eq!(client.request(r#"40{}"#).await, r#"44{"message":"not authenticated"}"#);
    assert_eq!(client.request(&connect_with("not.a.jwt")).await, r#"44{"message":"invalid token"}"#);
    let foreign = token_with(json!({"sub": "eve"}), json!({}), "another-secret");
    assert_eq!(client.request(&connect_with(&foreign)).await, r#"44{"message":"invalid token"}"#);
    assert_eq!(client.request(r#"40{"token":42}"#).await, r#"44{"message":"invalid token"}"#);
    // The session is still open: a good CONNECT now signs it in.
    let reply = connected(&client.request(&connect_with(&token("alice", json!({})))).await);
    assert_eq!(reply.as_object().unwrap().len(), 2, "sid and pid: {reply}");
    let joined = client.join("lobby", 1).await;
    assert_eq!(joined["users"], json!(["alice"]), "{joined}");
}

/// Who `client` is: the `from` of a message it publishes to a room of its own.
async fn publisher_of(client: &mut SioWs, room: &str) -> String {
    client.join(room, 900).await;
    client.send(&emit("publish", json!({ "room": room, "data": "who" }), Some(901))).await;
    let packet = client.recv_until(|p| p.starts_with("42")).await;
    let (name, args) = event(&packet).unwrap();
    assert_eq!(name, "message", "{packet}");
    args[0]["from"].as_str().expect("from").to_owned()
}

#[tokio::test]
async fn connect_falls_back_to_the_authorization_header_then_the_query_token() {
    let server = start(config_auth_required());
    let addr = server.addr;
    let bearer = format!("Bearer {}", token("hedda", json!({})));
    let query = format!("&token={}", token("quinn", json!({})));

    let (mut by_header, _) = SioWs::open(addr, "", &[("Authorization", &bearer)]).await;
    connected(&by_header.request("40").await);
    assert_eq!(publisher_of(&mut by_header, "h").await, "hedda");

    let (mut by_query, _) = SioWs::open(addr, &query, &[]).await;
    connected(&by_query.request("40").await);
    assert_eq!(publisher_of(&mut by_query, "q").await, "quinn");

    // The header goes before the query.
    let (mut both, _) = SioWs::open(addr, &query, &[("Authorization", &bearer)]).await;
    connected(&both.request("40").await);
    assert_eq!(publisher_of(&mut both, "b").await, "hedda");

    // The CONNECT's own token goes before both, even when they are bad.
    let (mut overridden, _) = SioWs::open(addr, "&token=bad", &[("Authorization", "Bearer bad")]).await;
    connected(&overridden.request(&connect_with(&token("carl", json!({})))).await);
    assert_eq!(publisher_of(&mut overridden, "c").await, "carl");

    // A bad handshake token with no CONNECT token is a refusal, not a fallback.
    let (mut bad_header, _) = SioWs::open(addr, &query, &[("Authorization", "Bearer bad")]).await;
    assert_eq!(bad_header.request("40").await, r#"44{"message":"invalid token"}"#);
    let (mut bad_query, _) = SioWs::open(addr, "&token=bad", &[]).await;
    assert_eq!(bad_query.request("40").await, r#"44{"message":"invalid token"}"#);

    // Long polling reads the handshake's token the same way.
    let (mut poller, _) = Poller::open(addr, &query, &[]).await;
    poller.post(&["40", &emit("join", json!({"room": "p"}), Some(1))]).await;
    let packets = poller.until(|p| p.starts_with("431")).await;
    connected(&packets[0]);
    assert_eq!(ack_arg(&packets[1], 1)["users"], json!(["quinn"]), "{packets:?}");
}

#[tokio::test]
async fn without_required_auth_a_session_is_anon_and_its_connection_id() {
    let server = start(config());
    let (mut client, _) = SioWs::open(server.addr, "", &[]).await;
    let reply = connected(&client.request("40").await);
    let sid = reply["sid"].as_str().unwrap();
    assert_eq!(publisher_of(&mut client, "anon-room").await, format!("anon:{sid}"));
}

#[tokio::test]
async fn only_the_default_namespace_connects() {
    let server = start(config());
    let (mut client, _) = SioWs::open(server.addr, "", &[]).await;
    assert_eq!(client.request("40/admin,").await, r#"44/admin,{"message":"Invalid namespace"}"#);
    assert_eq!(client.request(r#"40/admin,{"token":"x"}"#).await, r#"44/admin,{"message":"Invalid namespace"}"#);
    connected(&client.request("40").await);
}

#[tokio::test]
async fn a_session_that_never_connects_is_closed_after_the_auth_timeout() {
    let server = auth_server();
    let before = Snapshot::take(&server).await;
    // Over a WebSocket: the socket's close, 4001.
    let (mut silent, _) = SioWs::open(server.addr, "", &[]).await;
    assert_eq!(silent.until_closed(WAIT).await, Some((4001, "authentication timeout".into())));
    // A refused CONNECT does not stop the clock.
    let (mut refused, _) = SioWs::open(server.addr, "", &[]).await;
    assert_eq!(refused.request(&connect_with("bad")).await, r#"44{"message":"invalid token"}"#);
    assert_eq!(refused.until_closed(WAIT).await, Some((4001, "authentication timeout".into())));
    // Over long polling: the poll gets Engine.IO's close, and the session is gone.
    let (mut poller, _) = Poller::open(server.addr, "", &[]).await;
    let packets = poller.until(|p| p == "1").await;
    assert_eq!(packets, ["1"]);
    assert!(eventually(WAIT, || async { is_unknown_sid(&poller.get().await) }).await, "the session is gone");
    settle(&server, &[(OPEN_SIO, 0.0)]).await;
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[
        (r#"herald_connections_closed_total{code="4001"}"#, 3.0),
        (r#"herald_connections_dropped_total{reason="auth"}"#, 3.0),
    ]);
}

// ---- events --------------------------------------------------------------------

#[tokio::test]
async fn events_without_an_ack_id_get_no_reply_and_acks_carry_the_reply() {
    let server = start(config());
    let mut client = SioWs::connect_as(server.addr, "ann").await;
    client.send(&emit("join", json!({"room": "r"}), None)).await;
    client.send(&emit("presence", json!({"room": "r"}), None)).await;
    client.send(&emit("ping", json!({}), None)).await;
    // The ping with an ack is answered next: the three before it got nothing.
    assert_eq!(client.request(r#"421["ping"]"#).await, r#"431[{"type":"pong"}]"#);
    // The join did happen.
    let presence = ack_arg(&client.request(&emit("presence", json!({"room": "r"}), Some(2))).await, 2);
    assert_eq!(presence["users"], json!(["ann"]), "{presence}");
    assert_eq!(presence["type"], "presence");
    assert!(presence.get("id").is_none(), "the ack id is not echoed in the argument: {presence}");
    // Large ack ids are carried whole.
    let id = u64::MAX;
    assert_eq!(ack_arg(&client.request(&format!(r#"42{id}["ping",{{}}]"#)).await, id), json!({"type": "pong"}));
}

#[tokio::test]
async fn publish_acks_its_seq_and_the_message_event_carries_an_offset() {
    let server = start(config());
    let mut client = SioWs::connect_as(server.addr, "pia").await;
    client.join("r", 1).await;
    client.send(&emit("publish", json!({"room": "r", "data": {"n": 1}}), Some(2))).await;
    let (mut acked, mut message) = (None, None);
    while acked.is_none() || message.is_none() {
        let packet = client.recv().await;
        if packet.starts_with("43") {
            assert!(acked.replace(ack_arg(&packet, 2)).is_none(), "one ack: {packet}");
        } else {
            let (name, args) = event(&packet).unwrap_or_else(|| panic!("{packet}"));
            assert_eq!(name, "message", "{packet}");
            assert!(message.replace(args).is_none(), "one message: {packet}");
        }
    }
    assert_eq!(acked.unwrap(), json!({"type": "ack", "seq": 1}));
    let args = message.unwrap();
    assert_eq!(args.len(), 2, "the frame and the offset: {args:?}");
    let frame = &args[0];
    assert_eq!(
        (&frame["type"], &frame["room"], &frame["from"], &frame["data"], &frame["seq"]),
        (&json!("message"), &json!("r"), &json!("pia"), &json!({"n": 1}), &json!(1)),
        "{frame}"
    );
    assert!(frame["ts"].is_u64(), "{frame}");
    let offset = args[1].as_str().expect("the offset is a string");
    assert!(offset.contains('r'), "the offset names the room: {offset}");
    // Without an ack, a publish is still delivered, and numbered next.
    client.send(&emit("publish", json!({"room": "r", "data": null}), None)).await;
    let (name, args) = event(&client.recv().await).unwrap();
    assert_eq!((name.as_str(), &args[0]["seq"], &args[0]["data"]), ("message", &json!(2), &Value::Null));
    assert_ne!(args[1].as_str(), Some(offset), "the offset moves on");
}

#[tokio::test]
async fn bad_events_are_answered_with_the_native_error_codes() {
    let server = start(config());
    let mut client = SioWs::connect_as(server.addr, "bo").await;
    let code = |reply: &Value| reply["code"].as_str().map(str::to_owned);
    let refused = [
        (emit("join", json!({"room": "bad room!"}), Some(1)), 1, "BAD_REQUEST"),
        (emit("join", json!("r"), Some(2)), 2, "BAD_REQUEST"),
        (emit("publish", json!([1, 2]), Some(3)), 3, "BAD_REQUEST"),
        (emit("publish", json!({"room": "r"}), Some(4)), 4, "BAD_REQUEST"),
        (emit("publish", json!({"room": "r", "data": 1}), Some(5)), 5, "NOT_IN_ROOM"),
        (emit("dance", json!({}), Some(6)), 6, "UNKNOWN_TYPE"),
        (emit("auth", json!({"token": token("bo", json!({}))}), Some(7)), 7, "UNKNOWN_TYPE"),
        (r#"428["join",{"room":"r",]"#.to_owned(), 8, "BAD_REQUEST|INVALID_JSON"),
    ];
    for (packet, id, expected) in refused {
        let reply = ack_arg(&client.request(&packet).await, id);
        assert_eq!(reply["type"], "error", "{packet} -> {reply}");
        let got = code(&reply).unwrap_or_default();
        assert!(expected.split('|').any(|e| e == got), "{packet} -> {reply}, expected {expected}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
        assert!(reply.get("id").is_none(), "{reply}");
    }
    // Packets that cannot be read at all have no ack to go to: an error event.
    for packet in ["4zz", "42notjson", r#"42{"a":1}"#, "42[1]", "9", r#"42["dance",{}]"#] {
        let reply = error_event(&client.request(packet).await);
        assert_eq!(reply["type"], "error", "{packet} -> {reply}");
        let expected = if packet.contains("dance") { "UNKNOWN_TYPE" } else { "BAD_REQUEST" };
        assert_eq!(code(&reply).as_deref(), Some(expected), "{packet} -> {reply}");
    }
    // None of it ended the session.
    assert_eq!(client.request(r#"429["ping"]"#).await, r#"439[{"type":"pong"}]"#);
}

#[tokio::test]
async fn a_binary_event_is_refused_and_its_attachments_dropped() {
    let server = start(config());
    let mut client = SioWs::connect_as(server.addr, "bin").await;
    client.join("r", 1).await;
    client.send(r#"451-3["publish",{"room":"r","data":{"_placeholder":true,"num":0}}]"#).await;
    client.send_binary(&[1, 2, 3]).await;
    let reply = ack_arg(&client.recv().await, 3);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "BAD_REQUEST", "{reply}");
    // The attachment was taken as the event's: no second error, nothing published.
    assert_eq!(client.request(r#"424["ping"]"#).await, r#"434[{"type":"pong"}]"#);
    client.send(&emit("publish", json!({"room": "r", "data": "text"}), Some(5))).await;
    let acked = client.recv_until(|p| p.starts_with("43")).await;
    assert_eq!(ack_arg(&acked, 5), json!({"type": "ack", "seq": 1}), "the binary event published nothing");
    // Two attachments are both dropped; a binary message of its own is refused.
    client.send(r#"452-6["publish",{"room":"r","data":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]"#).await;
    client.send_binary(&[4]).await;
    client.send_binary(&[5]).await;
    assert_eq!(ack(&client.recv_until(|p| !p.starts_with("42[\"message\"")).await).unwrap().0, 6);
    assert_eq!(client.request(r#"427["ping"]"#).await, r#"437[{"type":"pong"}]"#);
    client.send_binary(&[6]).await;
    assert_eq!(error_event(&client.recv().await)["code"], "BAD_REQUEST");
    assert_eq!(client.request(r#"428["ping"]"#).await, r#"438[{"type":"pong"}]"#);
}

#[tokio::test]
async fn events_before_the_connect_are_ignored() {
    let server = start(config());
    let (mut client, _) = SioWs::open(server.addr, "", &[]).await;
    client.send(r#"421["ping"]"#).await;
    client.send(&emit("join", json!({"room": "early"}), Some(2))).await;
    // The CONNECT's reply is the first packet: nothing answered the events.
    connected(&client.request("40").await);
    let joined = client.join("other", 3).await;
    assert_eq!(joined["room"], "other");
    let presence = ack_arg(&client.request(&emit("presence", json!({"room": "early"}), Some(4))).await, 4);
    assert_eq!(presence["users"], json!([]), "the early join did nothing: {presence}");
}

// ---- limits --------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_poll_body_is_413_and_ends_the_session() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let mut poller = Poller::connect_as(server.addr, "big").await;
    let before = Snapshot::take(&server).await;
    // Exactly the limit is fine.
    let head = r#"421["ping",{"pad":""#;
    let fits = format!("{head}{}\"}}]", "x".repeat(1024 - head.len() - 3));
    assert_eq!(fits.len(), 1024);
    poller.post(&[&fits]).await;
    assert_eq!(poller.until(|p| p.starts_with("43")).await.last().unwrap(), r#"431[{"type":"pong"}]"#);
    // One byte more is not.
    let over = format!("{head}{}\"}}]", "x".repeat(1025 - head.len() - 3));
    let (status, _) = poller.try_post(&over).await;
    assert_eq!(status, 413);
    // The session ends: a poll gets its close, or the session is gone already.
    let answer = poller.get().await;
    let closing = answer.0 == 200 && answer.1.split(SEPARATOR).next_back() == Some("1");
    assert!(closing || answer.0 == 400, "{answer:?}");
    assert!(
        eventually(WAIT, || async {
            let answer = poller.get().await;
            assert!(answer.0 == 400 || answer.1.split(SEPARATOR).next_back() == Some("1"), "{answer:?}");
            is_unknown_sid(&answer)
        })
        .await
    );
    settle(&server, &[(OPEN_SIO, 0.0)]).await;
    assert_moved(&before, &Snapshot::take(&server).await, &[(OVERSIZED, 1.0)]);
}

#[tokio::test]
async fn the_rate_limit_refuses_events_then_closes_a_flooding_session() {
    let server = server_with(|c| rate_limits(c, 3, 4));
    let mut client = SioWs::connect_as(server.addr, "flood").await;
    // The CONNECT took a token of the burst, as a native `auth` frame
    // does; then the rest of the burst, then one refusal per strike: the
    // last closes the session.
    for id in 1..=7 {
        client.send(&format!("42{id}[\"ping\"]")).await;
    }
    let mut pongs = Vec::new();
    let mut limited = Vec::new();
    let close = loop {
        match client.next_within(WAIT).await {
            Some(Read::Packet(packet)) => {
                let (id, args) = ack(&packet).unwrap_or_else(|| panic!("{packet}"));
                match args[0]["type"].as_str() {
                    Some("pong") => pongs.push(id),
                    Some("error") => {
                        assert_eq!(args[0]["code"], "RATE_LIMITED", "{packet}");
                        limited.push(id);
                    }
                    _ => panic!("{packet}"),
                }
            }
            Some(Read::Closed(close)) => break close,
            None => panic!("still open after {pongs:?} {limited:?}"),
        }
    };
    assert_eq!(pongs, [1, 2]);
    assert_eq!(limited, [3, 4, 5], "each refusal but the last is answered on its ack");
    assert_eq!(close.map(|(code, _)| code), Some(1008));
    let after = Snapshot::take(&server).await;
    assert_eq!(after.get(r#"herald_connections_dropped_total{reason="rate_limit"}"#), 1.0);
    assert_eq!(after.get(r#"herald_frames_dropped_total{reason="rate_limit"}"#), 4.0);
}

#[tokio::test]
async fn packets_that_cannot_be_read_count_against_the_rate_limit() {
    let server = server_with(|c| rate_limits(c, 3, 4));
    let mut client = SioWs::connect_as(server.addr, "junk").await;
    // Not a Socket.IO packet, not an Engine.IO packet: each is answered
    // with an error, so each must take a token as any frame does (a native
    // frame that is not JSON does). The CONNECT took the burst's first.
    for packet in ["4zz", "9", "4zz", "9", "4zz", "9", "4zz"] {
        client.send(packet).await;
    }
    let mut codes = Vec::new();
    let close = loop {
        match client.next_within(WAIT).await {
            Some(Read::Packet(packet)) => codes.push(error_event(&packet)["code"].as_str().unwrap_or_default().to_owned()),
            Some(Read::Closed(close)) => break close,
            None => panic!("still open after 7 refused packets with rate_burst 3, rate_strikes 4: {codes:?}"),
        }
    };
    assert_eq!(codes, ["BAD_REQUEST", "BAD_REQUEST", "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]);
    assert_eq!(close.map(|(code, _)| code), Some(1008));
}

#[tokio::test]
async fn a_polling_session_that_stops_polling_is_ended_after_the_heartbeat_timeout() {
    let server = server_with(|c| {
        c.heartbeat.interval_ms = 100;
        c.heartbeat.timeout_ms = 1000;
    });
    let poller = Poller::connect_as(server.addr, "idle").await;
    settle(&server, &[(OPEN_SIO, 1.0)]).await;
    // While it polls (and answers pings) it lives past the timeout: 20
    // pings are twice `heartbeat.timeout_ms`...
    let mut pings = 0;
    while pings < 20 {
        for packet in poller.poll().await {
            assert_eq!(packet, "2");
            pings += 1;
            poller.post(&["3"]).await;
        }
    }
    assert_eq!(Snapshot::take(&server).await.get(HEARTBEAT_DROPPED), 0.0);
    // ...and once it stops, it is ended.
    settle(&server, &[(OPEN_SIO, 0.0), (HEARTBEAT_DROPPED, 1.0)]).await;
    assert!(is_unknown_sid(&poller.get().await));
    assert!(is_unknown_sid(&poller.try_post("3").await));
}

/// Publishes to `room` through the API, which must answer 200: the `seq`.
async fn publish(server: &TestServer, room: &str, data: Value) -> u64 {
    publish_via_api(server.addr, API_KEY, room, data).await
}

/// The next `message` `client` gets; the frames before it go to `others`.
async fn next_message(client: &mut Client, others: &mut Vec<Value>) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "message" {
            return frame;
        }
        others.push(frame);
    }
}

/// Waits for `user`'s `user_left` of `room`, among `others` or still to come.
async fn expect_user_left(client: &mut Client, others: Vec<Value>, room: &str, user: &str) {
    let left = json!({"type": "user_left", "room": room, "user": user});
    if others.contains(&left) {
        return;
    }
    loop {
        if client.recv().await == left {
            return;
        }
    }
}

/// Waits until `room`'s presence, asked by `client`, is `users`.
async fn presence_becomes(client: &mut Client, room: &str, users: Value) {
    let mut last = Value::Null;
    for _ in 0..250 {
        client.send(json!({"type": "presence", "room": room, "id": "p"})).await;
        let reply = loop {
            let frame = client.recv().await;
            if frame["id"] == "p" {
                break frame;
            }
        };
        if reply["users"] == users {
            return;
        }
        last = reply;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("presence of {room} stayed {last}, not {users}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_session_is_dropped_as_a_slow_consumer() {
    let server = server_with(|c| {
        c.api.key = API_KEY.into();
        c.limits.outbound_queue = 64;
    });
    let mut reader = ws_connect_as(&server, "reader").await;
    reader.join("firehose").await;
    let (mut stalled, _) = SioWs::open_recv_buffer(server.addr, 4096).await;
    connected(&stalled.request(&connect_with(&token("stalled", json!({})))).await);
    stalled.join("firehose", 1).await;
    assert_eq!(reader.recv_type("user_joined").await["user"], "stalled");
    // `stalled` reads nothing from now on.
    let data = json!("y".repeat(20_000));
    let mut sent = 0;
    let mut others = Vec::new();
    while Snapshot::take(&server).await.get(SLOW_DROPPED) == 0.0 {
        assert!(sent < 2000, "2000 messages did not make the stalled session slow");
        for _ in 0..10 {
            let seq = publish(&server, "firehose", data.clone()).await;
            sent += 1;
            assert_eq!(seq, sent);
            let message = next_message(&mut reader, &mut others).await;
            assert_eq!(message["seq"], sent, "the reader gets every message, in order");
        }
    }
    expect_user_left(&mut reader, others, "firehose", "stalled").await;
    presence_becomes(&mut reader, "firehose", json!(["reader"])).await;
    settle(&server, &[(OPEN_SIO, 0.0), (r#"herald_connections_closed_total{code="4008"}"#, 1.0)]).await;
    // What it reads now: its backlog, then a 4008 close or the end of the stream.
    let end = stalled.until_closed(Duration::from_secs(10)).await;
    assert!(matches!(end, None | Some((4008, _))), "closed with {end:?}");
    // The room and the server carry on.
    let seq = publish(&server, "firehose", json!("after")).await;
    assert_eq!(reader.recv_type("message").await["seq"], seq);
    let mut fresh = SioWs::connect_as(server.addr, "fresh").await;
    assert_eq!(fresh.request(r#"421["ping"]"#).await, r#"431[{"type":"pong"}]"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_session_that_never_polls_is_dropped_with_its_queue_bounded() {
    const QUEUE: usize = 16;
    let server = server_with(|c| {
        c.api.key = API_KEY.into();
        c.limits.outbound_queue = QUEUE;
    });
    let mut reader = ws_connect_as(&server, "reader").await;
    reader.join("feed").await;
    let mut poller = Poller::connect_as(server.addr, "sleeper").await;
    poller.post(&[&emit("join", json!({"room": "feed"}), Some(1))]).await;
    poller.until(|p| p.starts_with("431")).await;
    assert_eq!(reader.recv_type("user_joined").await["user"], "sleeper");
    // It never polls again: far more than its queue holds is published.
    let mut others = Vec::new();
    for n in 1..=(QUEUE as u64 * 4) {
        assert_eq!(publish(&server, "feed", json!(n)).await, n);
        assert_eq!(next_message(&mut reader, &mut others).await["seq"], n, "the reader gets every message");
    }
    settle(&server, &[(SLOW_DROPPED, 1.0)]).await;
    // A poll now gets at most a queue's worth and the close, or finds it gone.
    let answer = poller.get().await;
    if answer.0 == 200 {
        let packets: Vec<&str> = answer.1.split(SEPARATOR).collect();
        assert_eq!(packets.last(), Some(&"1"), "{packets:?}");
        assert!(packets.len() <= QUEUE + 1, "{} packets were held for it: {packets:?}", packets.len());
    } else {
        assert!(answer.0 == 400, "{answer:?}");
    }
    expect_user_left(&mut reader, others, "feed", "sleeper").await;
    presence_becomes(&mut reader, "feed", json!(["reader"])).await;
    settle(&server, &[(OPEN_SIO, 0.0), (r#"herald_connections_closed_total{code="4008"}"#, 1.0)]).await;
    assert!(eventually(WAIT, || async { is_unknown_sid(&poller.get().await) }).await);
}

#[tokio::test]
async fn a_polling_session_that_lags_in_a_latest_room_stays_and_ends_on_the_newest_message() {
    // A ticker's namespace keeps only the newest message for a reader whose
    // queue is full: a polling session that polls late is not closed, and
    // its last message is the room's last, with `seq` only going up.
    const QUEUE: usize = 8;
    let server = server_with(|c| {
        c.api.key = API_KEY.into();
        c.limits.outbound_queue = QUEUE;
        let mut ticker = herald::config::NamespaceConfig::new("tick.");
        ticker.slow_consumer = herald::config::SlowConsumer::Latest;
        c.namespaces = vec![ticker];
    });
    let mut poller = Poller::connect_as(server.addr, "late").await;
    poller.post(&[&emit("join", json!({"room": "tick.eur"}), Some(1))]).await;
    poller.until(|p| p.starts_with("431")).await;
    let last = QUEUE as u64 * 4;
    for n in 1..=last {
        assert_eq!(publish(&server, "tick.eur", json!(n)).await, n);
    }
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        for packet in poller.until(|p| p.starts_with("42")).await {
            if let Some(("message", args)) = event(&packet).as_ref().map(|(name, args)| (name.as_str(), args)) {
                seqs.push(args[0]["seq"].as_u64().unwrap());
            }
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq only goes up: {seqs:?}");
    assert!(seqs.len() <= QUEUE + 1, "what did not fit was not kept: {seqs:?}");
    let after = Snapshot::take(&server).await;
    assert_eq!(after.get(OPEN_SIO), 1.0, "the session stays");
    assert_eq!(after.get(r#"herald_connections_closed_total{code="4008"}"#), 0.0);
    assert!(after.get(r#"herald_slow_consumer_drops_total{policy="latest"}"#) > 0.0);
}

// ---- metrics and shared rooms ------------------------------------------------------

#[tokio::test]
async fn socket_io_sessions_count_in_the_metrics_under_their_own_transport() {
    let server = start(config());
    let before = Snapshot::take(&server).await;
    assert_eq!(before.get(OPEN_SIO), 0.0);
    let mut over_ws = SioWs::connect_as(server.addr, "w").await;
    let mut poller = Poller::connect_as(server.addr, "p").await;
    let (_native, _) = ws_connect(&server).await;
    settle(&server, &[(OPEN_SIO, 2.0), (OPEN_WS, 1.0), (ACCEPTED_SIO, 2.0), (ACCEPTED_WS, 1.0)]).await;

    let ping = r#"421["ping"]"#;
    let mid = Snapshot::take(&server).await;
    assert_eq!(over_ws.request(ping).await, r#"431[{"type":"pong"}]"#);
    poller.post(&[ping]).await;
    poller.until(|p| p.starts_with("431")).await;
    let after = Snapshot::take(&server).await;
    assert_moved(&before, &after, &[(r#"herald_frames_received_total{type="ping"}"#, 2.0)]);
    assert!(after.get(RECEIVED_BYTES_SIO) > mid.get(RECEIVED_BYTES_SIO), "{}", after.0);
    assert_eq!(after.get(r#"herald_transport_received_bytes_total{transport="ws"}"#), 0.0);

    // The client's own goodbyes end them: DISCONNECT over the WebSocket,
    // Engine.IO's close over polling.
    over_ws.send("41").await;
    assert!(matches!(over_ws.until_closed(WAIT).await, None | Some((1000, _))));
    poller.post(&["1"]).await;
    settle(&server, &[(OPEN_SIO, 0.0), (OPEN_WS, 1.0)]).await;
    assert!(eventually(WAIT, || async { is_unknown_sid(&poller.get().await) }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_socket_io_clients_share_rooms_and_seq() {
    let server = start(config());
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("mix").await;
    let mut bob = SioWs::connect_as(server.addr, "bob").await;
    let joined = bob.join("mix", 1).await;
    let mut users: Vec<String> = serde_json::from_value(joined["users"].clone()).unwrap();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");
    let mut carol = Poller::connect_as(server.addr, "carol").await;
    carol.post(&[&emit("join", json!({"room": "mix"}), Some(1))]).await;
    carol.until(|p| p.starts_with("431")).await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "carol");
    let joined_event = bob.recv_until(|p| p.starts_with("42")).await;
    assert_eq!(event(&joined_event).unwrap(), ("user_joined".into(), vec![json!({"type": "user_joined", "room": "mix", "user": "carol"})]));

    /// The frame a `message` event carries; panics on any other packet.
    fn message_of(packet: &str) -> Value {
        let (name, args) = event(packet).unwrap_or_else(|| panic!("{packet}"));
        assert_eq!(name, "message", "{packet}");
        args[0].clone()
    }
    let is_message = |p: &str| p.starts_with(r#"42["message""#);

    // Bob (WebSocket) publishes: seq 1 for everyone.
    bob.send(&emit("publish", json!({"room": "mix", "data": "from bob"}), Some(2))).await;
    let mut got_ack = false;
    let mut got_message = false;
    while !(got_ack && got_message) {
        let packet = bob.recv().await;
        if packet.starts_with("43") {
            assert_eq!(ack_arg(&packet, 2), json!({"type": "ack", "seq": 1}));
            got_ack = true;
        } else {
            assert_eq!(message_of(&packet)["seq"], 1);
            got_message = true;
        }
    }
    let native = alice.recv_type("message").await;
    assert_eq!((&native["seq"], &native["from"], &native["data"]), (&json!(1), &json!("bob"), &json!("from bob")));
    let polled = message_of(carol.until(is_message).await.last().unwrap());
    assert_eq!(polled, native, "the same frame, whatever the transport");

    // Alice (native) publishes: seq 2.
    alice.send(json!({"type": "publish", "room": "mix", "data": "from alice", "id": "a"})).await;
    let mut acked = false;
    while !acked {
        let frame = alice.recv().await;
        acked = frame["id"] == "a";
        if acked {
            assert_eq!(frame, json!({"type": "ack", "seq": 2, "id": "a"}));
        }
    }
    let at_bob = message_of(&bob.recv_until(is_message).await);
    assert_eq!((&at_bob["seq"], &at_bob["from"]), (&json!(2), &json!("alice")));
    assert_eq!(message_of(carol.until(is_message).await.last().unwrap()), at_bob);

    // Carol (long polling) publishes: seq 3.
    carol.post(&[&emit("publish", json!({"room": "mix", "data": "from carol"}), Some(2))]).await;
    let packets = carol.until(|p| p.starts_with("432")).await;
    assert_eq!(ack_arg(packets.last().unwrap(), 2), json!({"type": "ack", "seq": 3}));
    let at_alice = loop {
        let message = alice.recv_type("message").await;
        if message["seq"] != 2 {
            break message;
        }
    };
    assert_eq!((&at_alice["seq"], &at_alice["from"]), (&json!(3), &json!("carol")));
    assert_eq!(message_of(&bob.recv_until(is_message).await), at_alice);
}

#[tokio::test]
async fn a_client_back_before_its_old_connection_ended_recovers_from_the_live_session() {
    // A network that dropped without a word: the client reconnects while
    // the server still holds its old connection (no close, no timeout yet).
    let server = server_with(|c| c.api.key = API_KEY.into());
    let (mut old, _) = SioWs::open(server.addr, "", &[]).await;
    old.send(&connect_with(&token("lia", json!({})))).await;
    let reply = old.recv().await;
    let pid = serde_json::from_str::<Value>(&reply[2..]).unwrap()["pid"].as_str().unwrap().to_owned();
    old.join("quiet", 1).await;
    old.join("busy", 2).await;
    publish_via_api(server.addr, API_KEY, "busy", json!("b1")).await;
    let (_, args) = event(&old.recv_until(|p| p.starts_with("42")).await).unwrap();
    let offset = args[1].as_str().unwrap().to_owned();
    // Missed by the old connection's client, which is gone.
    publish_via_api(server.addr, API_KEY, "busy", json!("b2")).await;
    publish_via_api(server.addr, API_KEY, "quiet", json!("q1")).await;

    let (mut new, _) = SioWs::open(server.addr, "", &[]).await;
    let auth = json!({"token": token("lia", json!({})), "pid": pid, "offset": offset});
    new.send(&format!("40{auth}")).await;
    let reply = new.recv().await;
    assert_eq!(serde_json::from_str::<Value>(&reply[2..]).unwrap()["pid"], json!(pid), "recovered: {reply}");
    let mut missed = Vec::new();
    while missed.len() < 2 {
        let (name, args) = event(&new.recv().await).unwrap();
        assert_eq!(name, "message");
        missed.push((args[0]["room"].as_str().unwrap().to_owned(), args[0]["data"].clone()));
    }
    missed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(missed, [("busy".to_owned(), json!("b2")), ("quiet".to_owned(), json!("q1"))]);
    // The old connection is closed, and the new one is in both rooms.
    assert!(old.until_closed(WAIT).await.is_some_and(|(code, _)| code == 1000));
    publish_via_api(server.addr, API_KEY, "quiet", json!("q2")).await;
    let (_, args) = event(&new.recv().await).unwrap();
    assert_eq!(args[0]["data"], json!("q2"));

    // Another user with the same pid gets a session of its own, and the
    // live one is left alone.
    let (mut other, _) = SioWs::open(server.addr, "", &[]).await;
    other.send(&format!("40{}", json!({"token": token("mallory", json!({})), "pid": pid}))).await;
    let reply = other.recv().await;
    assert_ne!(serde_json::from_str::<Value>(&reply[2..]).unwrap()["pid"], json!(pid), "{reply}");
    assert!(new.next_within(Duration::from_millis(300)).await.is_none(), "the session is untouched");
}

#[tokio::test]
async fn odd_bytes_and_a_second_connect_leave_the_session_as_it_was() {
    let server = start(config());
    let (mut client, _) = SioWs::open(server.addr, "", &[]).await;
    let auth = connect_with(&token("odd", json!({})));
    let first = connected(&client.request(&auth).await);
    // A packet whose first character is wider than a byte is no packet.
    let refused = client.request("é").await;
    assert_eq!(error_event(&refused)["code"], "BAD_REQUEST", "{refused}");
    // Connected already: the same answer, the same pid.
    let again = connected(&client.request(&auth).await);
    assert_eq!(again, first);
    assert_eq!(client.request(&emit("ping", json!({}), Some(1))).await, r#"431[{"type":"pong"}]"#);
}

#[tokio::test]
async fn a_session_not_recovered_gets_nothing_its_rooms_replayed() {
    // One room recovers, the other's gap is longer than its history: the
    // session comes back new and in no room, and nothing is replayed to it.
    let server = server_with(|c| {
        c.api.key = API_KEY.into();
        c.history.size = 2;
    });
    let (mut old, _) = SioWs::open(server.addr, "", &[]).await;
    let pid = connected(&old.request(&connect_with(&token("gap", json!({})))).await)["pid"].clone();
    old.join("kept", 1).await;
    old.join("gone", 2).await;
    drop(old);
    // Its node sees it go (a close without a close frame) and keeps its record.
    assert!(eventually(WAIT, || async { Snapshot::take(&server).await.get(OPEN_SIO) == 0.0 }).await);
    publish(&server, "kept", json!("k1")).await;
    for n in 1..=5 {
        publish(&server, "gone", json!(n)).await;
    }
    let (mut back, _) = SioWs::open(server.addr, "", &[]).await;
    back.send(&format!("40{}", json!({"token": token("gap", json!({})), "pid": pid}))).await;
    let reply = connected(&back.recv().await);
    assert_ne!(reply["pid"], pid, "not recovered: {reply}");
    let pong = back.request(&emit("ping", json!({}), Some(3))).await;
    assert_eq!(pong, r#"433[{"type":"pong"}]"#, "nothing came before the pong");
    let refused = back.request(&emit("publish", json!({"room": "kept", "data": 1}), Some(4))).await;
    assert_eq!(ack_arg(&refused, 4)["code"], "NOT_IN_ROOM");
}

/// A WebSocket to upgrade polling session `sid` to.
async fn probe(addr: SocketAddr, sid: &str) -> Stream {
    let url = sio_url(addr, &format!("&sid={sid}"));
    tokio_tungstenite::connect_async(url).await.expect("the upgrade's WebSocket").0
}

/// The next text message on `ws`, within [`WAIT`].
async fn next_text(ws: &mut Stream) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Pong(_))) => return "<pong>".into(),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_polling_session_upgrades_and_a_failed_try_leaves_it_polling() {
    let server = start(config());
    let mut poller = Poller::connect_as(server.addr, "up").await;

    // A try the client gives up (a close frame): the session polls on.
    let mut tried = probe(server.addr, &poller.sid).await;
    tried.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    assert_eq!(next_text(&mut tried).await, "<pong>", "a ping on the tried socket is answered there");
    tried.send(Message::Close(None)).await.unwrap();
    poller.post(&[&emit("ping", json!({}), Some(1))]).await;
    let polled = poller.until(|p| p.starts_with("43")).await;
    assert_eq!(polled.last().map(String::as_str), Some(r#"431[{"type":"pong"}]"#), "{polled:?}");
    assert!(polled.iter().all(|p| p.is_ascii()), "no WebSocket bytes in a poll: {polled:?}");

    // The upgrade: 2probe, 3probe, the poll under way ends with a noop, 5.
    let held = tokio::spawn({
        let (addr, query) = (poller.addr, poller.query());
        async move { eio(addr, "GET", &query, &[], "").await }
    });
    let mut ws = probe(server.addr, &poller.sid).await;
    ws.send(Message::Text("2probe".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    let (status, body) = held.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "6"), "the held poll ends with a noop");
    ws.send(Message::Text("5".into())).await.unwrap();
    ws.send(Message::Text(emit("ping", json!({}), Some(2)).into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, r#"432[{"type":"pong"}]"#, "the session answers on its WebSocket");
    assert!(is_unknown_sid(&poller.get().await), "the session polls no more");
    settle(&server, &[(OPEN_SIO, 1.0)]).await;
}

#[tokio::test]
async fn a_recovery_that_does_not_fit_the_queue_ends_and_the_next_starts_afresh() {
    // What a session missed is replayed into its queue before the CONNECT
    // reply goes out; more than the queue holds makes it a slow consumer,
    // and its client, back again, starts afresh rather than fail the same way.
    let server = server_with(|c| {
        c.api.key = API_KEY.into();
        c.limits.outbound_queue = 8;
    });
    let (mut old, _) = SioWs::open(server.addr, "", &[]).await;
    let pid = connected(&old.request(&connect_with(&token("far", json!({})))).await)["pid"].clone();
    old.join("busy", 1).await;
    drop(old);
    assert!(eventually(WAIT, || async { Snapshot::take(&server).await.get(OPEN_SIO) == 0.0 }).await);
    for n in 1..=20 {
        publish(&server, "busy", json!(n)).await;
    }
    let comeback = json!({"token": token("far", json!({})), "pid": pid});
    let (mut back, _) = SioWs::open(server.addr, "", &[]).await;
    back.send(&format!("40{comeback}")).await;
    assert!(back.until_closed(WAIT).await.is_none_or(|(code, _)| code == 4008), "a slow consumer");
    settle(&server, &[(OPEN_SIO, 0.0), (r#"herald_connections_closed_total{code="4008"}"#, 1.0)]).await;
    let (mut again, _) = SioWs::open(server.addr, "", &[]).await;
    again.send(&format!("40{comeback}")).await;
    let reply = connected(&again.recv().await);
    assert_ne!(reply["pid"], pid, "afresh: {reply}");
}
