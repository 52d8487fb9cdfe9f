//! Engine.IO's HTTP long polling: a session without a socket of its own.
//!
//! The handshake (`GET /socket.io/?EIO=4&transport=polling`) opens the
//! session's connection on the worker that served it, with no socket (see
//! `Task::detached`), and answers with its open packet. From then on:
//!
//! - `GET …&sid=S` takes what waits in the session's outbox, every packet
//!   separated by the record separator. While nothing waits the request is
//!   held (one at a time per session) until something does: a frame, or
//!   the heartbeat's ping at the latest. What a poll whose client is seen
//!   gone could not take goes back in front of the queue (a client that
//!   vanishes unseen loses that body: its messages come back with recovery).
//! - `POST …&sid=S` hands its packets to the session, which handles them in
//!   order on its own worker, as it would a WebSocket's frames. A body
//!   over `limits.max_message_bytes` is answered 413 and ends the session;
//!   more than `limits.outbound_queue` packets or
//!   `limits.outbound_queue_bytes` bytes waiting to be handled (a flood
//!   while the session waits for a join) is 429 and ends it too.
//! - A session heard from by neither (a client that stopped polling) is
//!   ended after `heartbeat.timeout_ms` (`pingInterval + pingTimeout`),
//!   and a client that stops reading has the same bounded queue as any
//!   connection.
//! - The upgrade: a WebSocket to `…&transport=websocket&sid=S` is handed to
//!   the session (see `transport::handshake`), which answers its `2probe`
//!   with `3probe`, ends the poll under way (`6`, a noop), and on `5`
//!   moves onto the socket; what waited for a poll goes first on it.
//!
//! Every answer carries CORS headers for an origin `server.allowed_origins`
//! allows (any, when the list is empty); another origin gets 403.

use std::os::fd::RawFd;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;

use super::Sio;
use crate::connection::Transport;
use crate::connection::core::{Connection, Handshake};
use crate::connection::reactor::Reactor;
use crate::connection::task::Task;
use crate::delivery::polling::{Link, Poll, Posted};
use crate::delivery::Outbox;
use crate::metrics::TransportKind;
use crate::node::Node;
use crate::protocol::close;
use crate::protocol::socketio as packet;
use crate::transport::admission;
use crate::transport::handshake::Head;

/// Writes `bytes` to the socket `fd` now (a short answer on a fresh socket).
pub(crate) fn send_now(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `fd` is the session's open socket, and `bytes` is valid for reads.
    unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
}

/// Mounts `/socket.io/` for polling (the WebSocket transport never gets
/// here: see `transport::handshake`).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/socket.io/", "/socket.io"])
            .route(web::get().to(get))
            .route(web::post().to(post))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
    );
}

/// The query parameters Engine.IO requests carry.
#[derive(Default)]
pub(crate) struct Query {
    pub eio: Option<String>,
    pub transport: Option<String>,
    pub sid: Option<String>,
}

impl Query {
    pub(crate) fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        for (key, value) in serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default() {
            match key.as_str() {
                "EIO" => parsed.eio = Some(value),
                "transport" => parsed.transport = Some(value),
                "sid" => parsed.sid = Some(value),
                _ => {}
            }
        }
        parsed
    }
}

/// Engine.IO's errors: the HTTP status, and its code and message in the body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedVersion,
}

impl EngineError {
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            _ => 400,
        }
    }

    pub(crate) fn body(self) -> String {
        let (code, message) = match self {
            Self::UnknownTransport => (0, "Transport unknown"),
            Self::UnknownSid => (1, "Session ID unknown"),
            Self::BadHandshakeMethod => (2, "Bad handshake method"),
            Self::BadRequest => (3, "Bad request"),
            Self::Forbidden => (4, "Forbidden"),
            Self::UnsupportedVersion => (5, "Unsupported protocol version"),
        };
        serde_json::json!({ "code": code, "message": message }).to_string()
    }
}

/// The CORS headers an answer carries.
type Cors = Vec<(header::HeaderName, String)>;

/// The CORS headers for `req`'s origin, or `Err` for an origin that may not
/// open sessions.
fn cors(req: &HttpRequest, node: &Node) -> Result<Cors, EngineError> {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return Ok(Vec::new()) };
    if !admission::origin_allowed(&node.services.config.server.allowed_origins, Some(origin)) {
        node.services.metrics.refused(crate::metrics::Refusal::Origin);
        return Err(EngineError::Forbidden);
    }
    Ok(vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_owned()),
        (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".to_owned()),
        (header::VARY, "Origin".to_owned()),
    ])
}

fn reply(status: u16, cors: &[(header::HeaderName, String)], content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut response = HttpResponse::build(status);
    response.content_type(content_type).insert_header((header::CACHE_CONTROL, "no-store"));
    for (name, value) in cors {
        response.insert_header((name.clone(), value.clone()));
    }
    response.body(body.into())
}

fn refuse(error: EngineError, cors: &[(header::HeaderName, String)]) -> HttpResponse {
    reply(error.status(), cors, "application/json", error.body())
}

fn packets(body: Bytes, cors: &[(header::HeaderName, String)]) -> HttpResponse {
    reply(200, cors, "text/plain; charset=UTF-8", body)
}

/// A request that passed [`check`]: its CORS headers, and its session.
type Checked = (Cors, Option<Arc<Link>>);

/// What every Engine.IO request is checked for: an allowed origin (its
/// CORS headers), `EIO=4`, the polling transport, and a session that
/// exists if it names one; `Err` says why not, with the headers to answer with.
fn check(req: &HttpRequest, node: &Node) -> Result<Checked, (EngineError, Cors)> {
    let cors = cors(req, node).map_err(|error| (error, Vec::new()))?;
    let query = Query::parse(req.query_string());
    let error = if query.eio.as_deref() != Some("4") {
        EngineError::UnsupportedVersion
    } else if query.transport.as_deref() != Some("polling") {
        EngineError::UnknownTransport
    } else {
        match &query.sid {
            None => return Ok((cors, None)),
            Some(sid) => match node.services.socketio.link(sid) {
                Some(link) => return Ok((cors, Some(link))),
                None => EngineError::UnknownSid,
            },
        }
    };
    Err((error, cors))
}

async fn get(req: HttpRequest, node: web::Data<Node>) -> HttpResponse {
    let (cors, link) = match check(&req, &node) {
        Ok(checked) => checked,
        Err((error, cors)) => return refuse(error, &cors),
    };
    let Some(link) = link else { return open(&req, &node, &cors) };
    match link.poll() {
        Poll::Ready(body) => packets(body, &cors),
        Poll::Wait(waiting) => match waiting.await {
            Ok(body) => packets(body, &cors),
            // The session ended without a word.
            Err(_) => packets(Bytes::from_static(packet::CLOSE), &cors),
        },
        Poll::Busy | Poll::Gone => refuse(EngineError::BadRequest, &cors),
    }
}

/// The handshake: a new session's connection, on this worker, and its open packet.
fn open(req: &HttpRequest, node: &Arc<Node>, cors: &[(header::HeaderName, String)]) -> HttpResponse {
    let head = Head {
        method: "GET".into(),
        path: req.path().into(),
        query: req.query_string().into(),
        origin: req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_owned),
        authorization: req.headers().get(header::AUTHORIZATION).and_then(|a| a.to_str().ok()).map(str::to_owned),
        ..Head::default()
    };
    let (slot, handshake) = match admission::admit(&head, node, TransportKind::SocketIo) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let body = serde_json::json!({ "code": 3, "message": refused.message }).to_string();
            return reply(refused.status, cors, "application/json", body);
        }
    };
    let outbox = Outbox::new(-1, TransportKind::SocketIo, Sio::carries, node.services.bounds());
    outbox.set_polling();
    let link = Arc::new(Link::new(super::new_sid(), outbox.clone()));
    let transport = Sio::polling(handshake, link.clone());
    let mut conn = Connection::new(node.services.clone(), node.next_conn(), slot, outbox.clone(), transport);
    conn.open(Handshake::None);
    node.services.socketio.add_link(link.clone());
    let body = outbox.take_polled().unwrap_or_default();
    if let Err(error) = Reactor::spawn(Box::new(Task::detached(conn))) {
        tracing::error!(%error, "could not start a polling session");
        node.services.socketio.remove_link(&link.sid);
        return refuse(EngineError::BadRequest, cors);
    }
    packets(body, cors)
}

async fn post(req: HttpRequest, mut payload: web::Payload, node: web::Data<Node>) -> HttpResponse {
    let (cors, link) = match check(&req, &node) {
        Ok(checked) => checked,
        Err((error, cors)) => return refuse(error, &cors),
    };
    let Some(link) = link else { return refuse(EngineError::BadHandshakeMethod, &cors) };
    let max = node.services.config.limits.max_message_bytes;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { return refuse(EngineError::BadRequest, &cors) };
        if body.len() + chunk.len() > max {
            node.services.metrics.frames_dropped(crate::metrics::Fault::Size, 1);
            link.outbox().close(close::TOO_BIG);
            let body = serde_json::json!({ "code": 3, "message": close::TOO_BIG_REASON }).to_string();
            return reply(413, &cors, "application/json", body);
        }
        body.extend_from_slice(&chunk);
    }
    let Ok(text) = String::from_utf8(body) else { return refuse(EngineError::BadRequest, &cors) };
    // Packets wait here only while the session waits for an answer (a
    // join): a client that posts faster than that is a flood.
    let packets = text.split(packet::SEPARATOR as char).map(str::to_owned).collect();
    let limits = &node.services.config.limits;
    match link.post(packets, limits.outbound_queue, limits.outbound_queue_bytes) {
        Posted::Taken => reply(200, &cors, "text/html", "ok"),
        Posted::Gone => refuse(EngineError::BadRequest, &cors),
        Posted::Flood => {
            node.services.metrics.frames_dropped(crate::metrics::Fault::RateLimit, 1);
            link.outbox().close(close::POLICY);
            let body = serde_json::json!({ "code": 3, "message": close::POLICY_REASON }).to_string();
            reply(429, &cors, "application/json", body)
        }
    }
}

/// A browser's preflight for a cross-origin poll.
async fn preflight(req: HttpRequest, node: web::Data<Node>) -> HttpResponse {
    let mut cors = match cors(&req, &node) {
        Ok(cors) => cors,
        Err(error) => return refuse(error, &[]),
    };
    cors.push((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS".into()));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|h| h.to_str().ok()) {
        cors.push((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.to_owned()));
    }
    cors.push((header::ACCESS_CONTROL_MAX_AGE, "86400".into()));
    reply(204, &cors, "text/plain", Bytes::new())
}
