//! Every accepted socket's first request, read by Herald itself.
//!
//! The request head is read with `httparse` into a buffer that grows only as
//! bytes arrive (a silent socket holds none), within
//! `server.handshake_timeout_ms` (then 408 and the socket is closed) and
//! [`MAX_HEAD`] bytes (431). Then:
//!
//! - `GET /ws` is checked as a WebSocket upgrade (426 for a version other
//!   than 13, 400 for a bad key), admitted, answered 101, and becomes a
//!   [`Task`] that owns its socket: actix-http keeps nothing for it.
//! - `GET /sse` is checked and admitted the same way and becomes a
//!   subscriber's [`Task`].
//! - Anything else is handed to actix-web, the request replayed from the
//!   bytes already read ([`Replay`]).
//!
//! Until then the socket counts toward `limits.max_connections` (see
//! [`Node::handshake_started`]), so sockets that never finish their request
//! cannot crowd out the limit's accounting.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::admission::{self, Refused};
use super::replay::Replay;
use super::sse::{self, Sse};
use super::ws::Ws;
use super::{Transport, TransportKind};
use crate::auth::Identity;
use crate::connection::core::{Connection, Handshake};
use crate::connection::reactor::Reactor;
use crate::connection::task::Task;
use crate::connection::Outbox;
use crate::node::Node;

/// The largest request head accepted; a longer one is answered 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed at most; more is answered 431.
const MAX_HEADERS: usize = 64;

/// What Herald reads of a request head.
#[derive(Debug, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_version: Option<String>,
    pub ws_key: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<String>,
}

/// Why a request head could not be read.
enum HeadError {
    TooLarge,
    Malformed,
    /// The client closed or the socket failed.
    Gone,
}

/// Serves `stream`'s first request: opens a connection for `/ws` and
/// `/sse`, or returns the socket (with what was read of it) for actix-web.
pub async fn serve(stream: TcpStream, node: &Arc<Node>) -> Option<Replay> {
    let guard = node.handshake_started();
    let deadline = Instant::now() + Duration::from_millis(node.config.server.handshake_timeout_ms);
    let (head, raw) = match tokio::time::timeout_at(deadline.into(), read_head(&stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(HeadError::Gone)) => return None,
        Ok(Err(HeadError::TooLarge)) => {
            refuse(stream, deadline, response(431, "the request head is too large", &[])).await;
            return None;
        }
        Ok(Err(HeadError::Malformed)) => {
            refuse(stream, deadline, response(400, "malformed request", &[])).await;
            return None;
        }
        Err(_) => {
            refuse(stream, deadline, response(408, "the request took too long", &[])).await;
            return None;
        }
    };
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/ws") => {
            match open_ws(&head, node, stream.as_raw_fd()) {
                Ok(opening) => start(opening, stream, &raw.bytes[raw.head_len..]),
                Err(refusal) => refuse(stream, deadline, refusal).await,
            }
            drop(guard);
            None
        }
        ("GET", "/sse") => {
            match open_sse(&head, node, stream.as_raw_fd()) {
                Ok(opening) => start(opening, stream, &[]),
                Err(refusal) => refuse(stream, deadline, refusal).await,
            }
            drop(guard);
            None
        }
        _ => Some(Replay::new(raw.bytes, stream)),
    }
}

/// An admitted connection about to open.
struct Opening<T: Transport> {
    conn: Connection<T>,
    handshake: Handshake,
    /// What the client is sent first (a WebSocket's 101).
    response: Option<Bytes>,
}

/// Opens the connection and hands it to this worker's loop; `early` is
/// what the client sent after its request head.
fn start<T: Transport>(opening: Opening<T>, stream: TcpStream, early: &[u8]) {
    let Opening { mut conn, handshake, response } = opening;
    // From here on the socket is the connection's alone: out of tokio's
    // registry, into the worker's epoll set.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => return tracing::warn!(%error, "could not take over an upgraded socket"),
    };
    if let Some(response) = response {
        conn.outbox().write(response, true);
    }
    conn.open(handshake);
    let fd = stream.as_raw_fd();
    if let Err(error) = Reactor::adopt(fd, Box::new(Task::new(conn, stream, early))) {
        tracing::error!(%error, "could not start a connection");
    }
}

/// The bytes of a request head, and where the head ends in them.
struct Raw {
    bytes: Vec<u8>,
    head_len: usize,
}

/// Reads until a whole request head is in.
async fn read_head(stream: &TcpStream) -> Result<(Head, Raw), HeadError> {
    let mut bytes = Vec::new();
    loop {
        stream.readable().await.map_err(|_| HeadError::Gone)?;
        {
            let mut chunk = [0u8; 2048];
            match stream.try_read(&mut chunk) {
                Ok(0) => return Err(HeadError::Gone),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(HeadError::Gone),
            }
        }
        if let Some((head, head_len)) = parse_head(&bytes)? {
            return Ok((head, Raw { bytes, head_len }));
        }
        if bytes.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Parses a whole request head from `bytes`, or `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = Head {
        method: request.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        ..Head::default()
    };
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade = value.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_owned());
        }
    }
    Ok(Some((head, len)))
}

/// Checks and admits a WebSocket upgrade: the connection, and its 101.
fn open_ws(head: &Head, node: &Arc<Node>, fd: RawFd) -> Result<Opening<Ws>, Bytes> {
    if !head.upgrade_websocket || !head.connection_upgrade {
        return Err(response(400, "expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)", &[]));
    }
    if head.ws_version.as_deref() != Some("13") {
        return Err(response(426, "unsupported WebSocket version", &[("Sec-WebSocket-Version", "13")]));
    }
    let key = head.ws_key.as_deref().unwrap_or("");
    if data_encoding::BASE64.decode(key.as_bytes()).map_or(true, |k| k.len() != 16) {
        return Err(response(400, "Sec-WebSocket-Key must be 16 bytes in base64", &[]));
    }
    let (slot, handshake) = admission::admit(head, node, TransportKind::WebSocket).map_err(refused)?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let outbox = Outbox::new(fd, TransportKind::WebSocket, Ws::carries, node.bounds());
    let conn = Connection::new(node.clone(), node.next_conn(), slot, outbox, Ws::default());
    Ok(Opening { conn, handshake, response: Some(Bytes::from(response)) })
}

/// Checks and admits a subscription: the connection, its response head
/// waiting until its rooms are joined.
fn open_sse(head: &Head, node: &Arc<Node>, fd: RawFd) -> Result<Opening<Sse>, Bytes> {
    let (slot, handshake) = admission::admit(head, node, TransportKind::Sse).map_err(refused)?;
    let id = node.next_conn();
    let identity = match &handshake {
        Handshake::Valid(identity) => identity.clone(),
        Handshake::None if !node.config.auth.required => Identity::anonymous(&node.conn_label(id)),
        Handshake::None => return Err(unauthorized("a token is required (Authorization: Bearer or ?token=)")),
        Handshake::Invalid => return Err(unauthorized("invalid token")),
    };
    let rooms = sse::requested_rooms(&head.query, node.config.limits.max_rooms_per_conn)
        .map_err(|message| response(400, &message, &[]))?;
    if let Some(room) = rooms.iter().find(|room| !identity.may_join(room)) {
        return Err(response(403, &format!("this user may not join room {room}"), &[]));
    }
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n",
    );
    if let Some(origin) = &head.origin {
        // Only an allowed origin gets this far (see `admission`).
        response.push_str(&format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&format!("{:x}\r\n: subscribed\n\n\r\n", ": subscribed\n\n".len()));
    let outbox = Outbox::new(fd, TransportKind::Sse, Sse::carries, node.bounds());
    let conn = Connection::new(node.clone(), id, slot, outbox, Sse::new(rooms, Bytes::from(response)));
    Ok(Opening { conn, handshake, response: None })
}

fn refused(refused: Refused) -> Bytes {
    response(refused.status, refused.message, &[])
}

fn unauthorized(message: &str) -> Bytes {
    response(401, message, &[("WWW-Authenticate", "Bearer")])
}

/// A complete HTTP response with a JSON error body, `{"error": message}`,
/// after which the socket is closed.
pub fn response(status: u16, message: &str, headers: &[(&str, &str)]) -> Bytes {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Bytes::from(out)
}

/// How long a refused client gets to read its answer while what it still
/// sends is read and dropped: closing a socket with unread bytes resets it,
/// and a reset can overtake the answer.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Writes a refusal (within the handshake's time) and closes the socket.
/// Boxed, so that a socket waiting for its request does not carry the
/// refusal's state.
fn refuse(stream: TcpStream, deadline: Instant, response: Bytes) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(refusal(stream, deadline, response))
}

async fn refusal(mut stream: TcpStream, deadline: Instant, response: Bytes) {
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    let written = tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(100)).into(), write).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut sink = vec![0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(1..)) {}
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}
