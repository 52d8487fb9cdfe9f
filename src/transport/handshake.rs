//! Every accepted socket's first request, read by Herald itself.
//!
//! The socket is an entry of its worker's loop ([`Handshaking`]: no task,
//! no timer of its own, 64 bytes). The request head is read with
//! `httparse` into a buffer that grows only as bytes arrive (a silent
//! socket holds none), within
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

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

use super::admission::{self, Refused};
use super::replay::Replay;
use super::sse::{self, Sse};
use super::ws::Ws;
use super::socketio::{polling, Sio};
use crate::connection::Transport;
use crate::metrics::TransportKind;
use crate::auth::Identity;
use crate::connection::core::{Connection, Handshake};
use crate::connection::reactor::{Driven, Reactor, Readiness};
use crate::connection::task::{Task, SCRATCH};
use crate::connection::clock;
use crate::delivery::Outbox;
use crate::node::{HandshakeGuard, Node};

/// The largest request head accepted; a longer one is answered 431.
const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed at most; more is answered 431.
const MAX_HEADERS: usize = 64;

/// What Herald reads of a request head.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_version: Option<String>,
    pub ws_key: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<String>,
    /// An SSE client's position to resume from.
    pub last_event_id: Option<String>,
}

/// Why a request head could not be read.
enum HeadError {
    TooLarge,
    Malformed,
}

/// How long a refused client gets to read its answer while what it still
/// sends is read and dropped: closing a socket with unread bytes resets it,
/// and a reset can overtake the answer.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Where a worker sends the sockets whose requests are for actix-web.
type HttpHandoff = Rc<dyn Fn(Replay, Option<std::net::SocketAddr>)>;

thread_local! {
    static HTTP: RefCell<Option<HttpHandoff>> = const { RefCell::new(None) };
}

/// Forgets this worker's HTTP service (the worker is stopping).
pub(crate) fn clear_http_handoff() {
    HTTP.with(|http| http.borrow_mut().take());
}

/// Sets where this worker's plain HTTP requests go.
pub(crate) fn set_http_handoff(handoff: HttpHandoff) {
    HTTP.with(|http| *http.borrow_mut() = Some(handoff));
}

/// A socket whose first request is being read: an entry in its worker's
/// loop, like a connection, holding only what has arrived.
pub(crate) struct Handshaking {
    stream: Option<std::net::TcpStream>,
    node: Arc<Node>,
    _counted: HandshakeGuard,
    bytes: Vec<u8>,
    deadline: u32,
    /// Refused: the answer is written and this side shut; what the client
    /// still sends is dropped until it closes or the linger ends.
    refused_at: Option<u32>,
    readable: bool,
    /// The client has closed its side.
    closed: bool,
}

impl Handshaking {
    /// Reads `stream`'s first request on this worker.
    pub(crate) fn start(stream: std::net::TcpStream, node: &Arc<Node>) {
        let timeout = node.services.config.server.handshake_timeout_ms;
        let fd = stream.as_raw_fd();
        let entry = Box::new(Self {
            stream: Some(stream),
            node: node.clone(),
            _counted: node.handshake_started(),
            bytes: Vec::new(),
            deadline: clock::after(clock::now(), timeout),
            refused_at: None,
            readable: true,
            closed: false,
        });
        match Reactor::adopt(fd, entry) {
            // Polled again at the deadline, if nothing else wakes it first.
            Ok(place) => Reactor::poll_after(place, Duration::from_millis(timeout)),
            Err(error) => tracing::warn!(%error, "could not take an accepted socket"),
        }
    }

    /// Writes `response`, shuts this side, and lingers.
    fn refuse(&mut self, response: Bytes) -> Poll<()> {
        let Some(stream) = &self.stream else { return Poll::Ready(()) };
        // A fresh socket's buffer takes a short answer whole.
        let _ = (&*stream).write(&response);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        self.bytes = Vec::new();
        self.refused_at = Some(clock::now());
        Reactor::poll_again_after(REFUSAL_LINGER);
        self.linger()
    }

    /// Drops what the refused client sends until it closes, or the linger ends.
    fn linger(&mut self) -> Poll<()> {
        let Some(stream) = &self.stream else { return Poll::Ready(()) };
        let ended = SCRATCH.with(|scratch| loop {
            match (&*stream).read(&mut scratch.borrow_mut()) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        });
        let over = self.refused_at.is_some_and(|at| clock::since(clock::now(), at) >= REFUSAL_LINGER.as_millis() as u64);
        if ended || over {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Reads what has come; `Err` when the client is gone. A client that
    /// closes its side after its request is still answered.
    fn read(&mut self) -> Result<(), ()> {
        let Some(stream) = &self.stream else { return Err(()) };
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            loop {
                match (&*stream).read(&mut scratch) {
                    Ok(0) if self.bytes.is_empty() => return Err(()),
                    Ok(0) => {
                        self.readable = false;
                        self.closed = true;
                        return Ok(());
                    }
                    Ok(n) => {
                        self.bytes.extend_from_slice(&scratch[..n]);
                        if self.bytes.len() > MAX_HEAD {
                            return Ok(());
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        return Ok(());
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(()),
                }
            }
        })
    }

    /// Serves a whole request head: a connection for `/ws` and `/sse`,
    /// actix-web for the rest.
    fn route(&mut self, head: Head, head_len: usize) -> Poll<()> {
        let Some(fd) = self.stream.as_ref().map(|s| s.as_raw_fd()) else { return Poll::Ready(()) };
        let opened = match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/ws") => open_ws(&head, &self.node, fd).map(|opening| self.open(opening, head_len)),
            ("GET", "/sse") => open_sse(&head, &self.node, fd).map(|opening| self.open(opening, head_len)),
            ("GET", "/socket.io/" | "/socket.io") if self.node.services.config.socketio.enabled && is_websocket(&head) => {
                self.open_socketio(&head, head_len, fd)
            }
            _ => {
                Reactor::forget(fd);
                let (Some(stream), Some(handoff)) = (self.stream.take(), HTTP.with(|http| http.borrow().clone())) else {
                    return Poll::Ready(());
                };
                let peer = stream.peer_addr().ok();
                match TcpStream::from_std(stream) {
                    Ok(stream) => handoff(Replay::new(std::mem::take(&mut self.bytes), stream), peer),
                    Err(error) => tracing::warn!(%error, "could not hand a socket to the HTTP service"),
                }
                Ok(())
            }
        };
        match opened {
            Ok(()) => Poll::Ready(()),
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// A Socket.IO WebSocket: a session of its own, or (with a `sid`) the
    /// upgrade of a polling session, handed to it with its 101 sent.
    fn open_socketio(&mut self, head: &Head, head_len: usize, fd: RawFd) -> Result<(), Bytes> {
        let query = polling::Query::parse(&head.query);
        if query.eio.as_deref() != Some("4") {
            return Err(engine_error(polling::EngineError::UnsupportedVersion));
        }
        let Some(sid) = &query.sid else {
            let opening = open_sio(head, &self.node, fd)?;
            self.open(opening, head_len);
            return Ok(());
        };
        let link = self.node.services.socketio.link(sid).ok_or_else(|| engine_error(polling::EngineError::UnknownSid))?;
        let accept = check_upgrade(head)?;
        if !admission::origin_allowed(&self.node.services.config.server.allowed_origins, head.origin.as_deref()) {
            return Err(engine_error(polling::EngineError::Forbidden));
        }
        let Some(stream) = self.stream.take() else { return Ok(()) };
        Reactor::forget(fd);
        // A fresh socket's buffer takes a short answer whole.
        let _ = (&stream).write(switching(&accept).as_bytes());
        let early = self.bytes.get(head_len..).unwrap_or_default().to_vec();
        link.offer_upgrade(stream, early);
        Ok(())
    }

    /// Hands the socket to the connection it now carries, on this worker.
    fn open<T: Transport>(&mut self, opening: Opening<T>, head_len: usize) {
        let Some(stream) = self.stream.take() else { return };
        // Unless the client closed its side, every byte it sent is read:
        // the connection's first read waits for the socket's next edge.
        let drained = !self.readable && !self.closed;
        start(opening, stream, self.bytes.get(head_len..).unwrap_or_default(), drained);
    }
}

impl Driven for Handshaking {
    fn ready(&mut self, readiness: Readiness) {
        self.readable |= readiness.readable;
    }

    fn outbox(&self) -> Option<&Outbox> {
        None
    }

    fn drive(&mut self, _: &mut Context<'_>) -> Poll<()> {
        if self.refused_at.is_some() {
            return self.linger();
        }
        if self.readable && self.read().is_err() {
            return Poll::Ready(());
        }
        match parse_head(&self.bytes) {
            Ok(Some((head, len))) => return self.route(head, len),
            Err(HeadError::TooLarge) => return self.refuse(response(431, "the request head is too large", &[])),
            Err(HeadError::Malformed) => return self.refuse(response(400, "malformed request", &[])),
            Ok(None) if self.bytes.len() > MAX_HEAD => {
                return self.refuse(response(431, "the request head is too large", &[]))
            }
            // The client closed its side before its request was whole.
            Ok(None) if self.closed => return Poll::Ready(()),
            Ok(None) => {}
        }
        if clock::reached(clock::now(), self.deadline) {
            return self.refuse(response(408, "the request took too long", &[]));
        }
        Poll::Pending
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
fn start<T: Transport>(opening: Opening<T>, stream: std::net::TcpStream, early: &[u8], drained: bool) {
    let Opening { mut conn, handshake, response } = opening;
    match response {
        // The response and what opening writes (`welcome`) leave together,
        // in one write, as the connection is first polled.
        Some(response) => {
            conn.outbox().cork();
            conn.open(handshake);
            conn.outbox().uncork(Some(response));
        }
        None => conn.open(handshake),
    }
    // The connection takes the socket's place in the loop.
    if let Err(error) = Reactor::succeed(Box::new(Task::new(conn, stream, early, !drained))) {
        tracing::error!(%error, "could not start a connection");
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
        } else if name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(value.to_owned());
        }
    }
    Ok(Some((head, len)))
}

/// Whether a `/socket.io/` request asks for the WebSocket transport
/// (polling is actix-web's to serve).
fn is_websocket(head: &Head) -> bool {
    polling::Query::parse(&head.query).transport.as_deref() == Some("websocket")
}

/// Checks a WebSocket upgrade's headers: its `Sec-WebSocket-Accept`.
fn check_upgrade(head: &Head) -> Result<String, Bytes> {
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
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// The 101 that accepts a WebSocket.
fn switching(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Checks and admits a WebSocket upgrade: the connection, and its 101.
fn open_ws(head: &Head, node: &Arc<Node>, fd: RawFd) -> Result<Opening<Ws>, Bytes> {
    let accept = check_upgrade(head)?;
    let (slot, handshake) = admission::admit(head, node, TransportKind::WebSocket).map_err(refused)?;
    let outbox = Outbox::new(fd, TransportKind::WebSocket, Ws::carries, node.services.bounds());
    let conn = Connection::new(node.services.clone(), node.next_conn(), slot, outbox, Ws::default());
    Ok(Opening { conn, handshake, response: Some(Bytes::from(switching(&accept))) })
}

/// Checks and admits a Socket.IO session over a WebSocket: its open packet
/// follows the 101, and it signs in with its CONNECT.
fn open_sio(head: &Head, node: &Arc<Node>, fd: RawFd) -> Result<Opening<Sio>, Bytes> {
    let accept = check_upgrade(head)?;
    let (slot, handshake) = admission::admit(head, node, TransportKind::SocketIo).map_err(refused)?;
    let outbox = Outbox::new(fd, TransportKind::SocketIo, Sio::carries, node.services.bounds());
    let conn = Connection::new(node.services.clone(), node.next_conn(), slot, outbox, Sio::over_ws(handshake));
    Ok(Opening { conn, handshake: Handshake::None, response: Some(Bytes::from(switching(&accept))) })
}

/// An Engine.IO error answer, after which the socket is closed.
fn engine_error(error: polling::EngineError) -> Bytes {
    let body = error.body();
    let status = error.status();
    let reason = if status == 403 { "Forbidden" } else { "Bad Request" };
    Bytes::from(format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Checks and admits a subscription: the connection, its response head
/// waiting until its rooms are joined.
fn open_sse(head: &Head, node: &Arc<Node>, fd: RawFd) -> Result<Opening<Sse>, Bytes> {
    let (slot, handshake) = admission::admit(head, node, TransportKind::Sse).map_err(refused)?;
    let id = node.next_conn();
    let identity = match &handshake {
        Handshake::Valid(identity) => identity.clone(),
        Handshake::None if !node.services.config.auth.required => Identity::anonymous(&node.services.conn_label(id)),
        Handshake::None => return Err(unauthorized("a token is required (Authorization: Bearer or ?token=)")),
        Handshake::Invalid => return Err(unauthorized("invalid token")),
    };
    let rooms = sse::requested_rooms(&head.query, node.services.config.limits.max_rooms_per_conn)
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
    let outbox = Outbox::new(fd, TransportKind::Sse, Sse::carries, node.services.bounds());
    // `lastEventId` in the query: what EventSource polyfills send instead.
    let from_query = || {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&head.query)
            .ok()?
            .into_iter()
            .find_map(|(key, value)| (key == "lastEventId").then_some(value))
    };
    let last_event_id = head.last_event_id.clone().or_else(from_query);
    let rooms = sse::resume_from(rooms, last_event_id.as_deref());
    let conn = Connection::new(node.services.clone(), id, slot, outbox, Sse::new(rooms, Bytes::from(response)));
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
pub(crate) fn response(status: u16, message: &str, headers: &[(&str, &str)]) -> Bytes {
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
