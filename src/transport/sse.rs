//! The Server-Sent Events transport (`GET /sse?rooms=a,b`): a read-only
//! subscription for clients that cannot hold a WebSocket (`EventSource` in a
//! browser, `curl -N` in a shell).
//!
//! The request is checked in full before anything is sent: the node takes
//! it ([`admission`]), its token is good (or none is needed: 401 otherwise),
//! every room name is valid (400) and one the user may join (403). The
//! connection actor then starts, comes online in presence and joins its
//! rooms; only when every join has landed does the response begin, so a
//! message published after the client sees the headers reaches it.
//!
//! Every `message`, `direct` and `broadcast` frame for the connection is one
//! event, `data: <frame as JSON>`; a `: ping` comment goes out at the
//! heartbeat interval. Frames travel from the actor to the response body
//! through a channel of `limits.outbound_queue` frames: a client that stops
//! reading fills it and becomes a slow consumer like any other, its stream
//! ended and its socket shut down after the grace period. The stream ends
//! when the client goes away (a client sends nothing after its request, so
//! its socket is peeked every second for the end of its stream), and the
//! connection leaves its rooms and presence with it.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};

use super::admission::{self, Handshake};
use super::http::error_response;
use super::{Full, Transport, TransportKind};
use crate::auth::Identity;
use crate::connection::core::Connection;
use crate::connection::Control;
use crate::node::{Node, OpenSlot};
use crate::protocol::{self, Encoded, ServerKind};

/// How often an SSE connection checks that its client is still there.
const PEER_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A Server-Sent Events connection.
pub type SseConnection = Connection<Sse>;

/// `GET /sse?rooms=a,b`: subscribes to rooms (the parameter may repeat;
/// none at all gives a stream of the user's `direct` and `broadcast` frames).
pub async fn subscribe(req: HttpRequest, node: web::Data<Node>) -> HttpResponse {
    let node = node.into_inner();
    let admitted = match admission::admit::<Sse>(&req, &node) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.response(),
    };
    let id = node.next_conn();
    let identity = match &admitted.handshake {
        Handshake::Valid(identity) => identity.clone(),
        Handshake::None if !node.config.auth.required => Identity::anonymous(&node.conn_label(id)),
        Handshake::None => return unauthorized("a token is required (Authorization: Bearer or ?token=)"),
        Handshake::Invalid => return unauthorized("invalid token"),
    };
    let rooms = match requested_rooms(req.query_string(), node.config.limits.max_rooms_per_conn) {
        Ok(rooms) => rooms,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    if let Some(room) = rooms.iter().find(|room| !identity.may_join(room)) {
        return error_response(StatusCode::FORBIDDEN, &format!("this user may not join room {room}"));
    }

    let queue = node.config.limits.outbound_queue;
    let (tx, rx) = mpsc::channel(queue);
    let (ready, opened) = oneshot::channel();
    let mut admitted = admitted;
    // The body outlives the actor by as long as the socket takes to close,
    // so it holds the connection's slot.
    let body = EventStream { rx, control: admitted.control.clone(), _slot: admitted.slot.take() };
    let transport = Sse { tx, opening: Some(Box::new(Opening { rooms, ready })) };
    Connection::new(node, id, admitted, transport).start();
    if opened.await != Ok(true) {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the rooms are unavailable, try again");
    }

    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .force_close();
    if let Some(origin) = admission::allow_origin(&req) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)).insert_header((header::VARY, "Origin"));
    }
    response.streaming(body)
}

fn unauthorized(message: &str) -> HttpResponse {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The distinct rooms of every `rooms` parameter, each a comma-separated
/// list; an error names the first bad room.
fn requested_rooms(query: &str, max: usize) -> Result<Vec<Arc<str>>, String> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| "the query string is malformed".to_owned())?;
    let mut rooms = BTreeSet::new();
    for (_, list) in params.iter().filter(|(key, _)| key == "rooms") {
        if list.is_empty() {
            continue;
        }
        for room in list.split(',') {
            if !protocol::valid_room(room) {
                return Err(format!(
                    "invalid room name {room:?}: 1 to {} characters of A-Z a-z 0-9 _ . : -",
                    protocol::MAX_ROOM_LEN
                ));
            }
            rooms.insert(room);
        }
    }
    if rooms.len() > max {
        return Err(format!("too many rooms: at most {max} per connection"));
    }
    Ok(rooms.into_iter().map(Arc::from).collect())
}

/// What an SSE connection keeps beyond the core: the sending end of its
/// response body, and the rooms it still has to join.
pub struct Sse {
    tx: mpsc::Sender<Bytes>,
    opening: Option<Box<Opening>>,
}

/// Rooms to join as the stream opens, and the request waiting for them.
struct Opening {
    rooms: Vec<Arc<str>>,
    ready: oneshot::Sender<bool>,
}

impl Sse {
    fn push(&mut self, ctx: &mut Context<SseConnection>, chunk: Bytes) -> Result<(), Full> {
        match self.tx.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Full),
            // The response body is gone: the client left.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ctx.stop();
                Ok(())
            }
        }
    }
}

impl Transport for Sse {
    type Context = Context<SseConnection>;

    const KIND: TransportKind = TransportKind::Sse;
    const DUPLEX: bool = false;

    fn set_mailbox_capacity(ctx: &mut Self::Context, capacity: usize) {
        ctx.set_mailbox_capacity(capacity);
    }

    fn carries(kind: ServerKind) -> bool {
        matches!(kind, ServerKind::Message | ServerKind::Direct | ServerKind::Broadcast)
    }

    fn write(&mut self, ctx: &mut Self::Context, frame: Encoded) -> Result<(), Full> {
        self.push(ctx, event(&frame.text))
    }

    fn ping(&mut self, ctx: &mut Self::Context) -> Result<(), Full> {
        self.push(ctx, Bytes::from_static(b": ping\n\n"))
    }

    /// Says why in a comment, when there is room for it, and ends the stream.
    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str) {
        let _ = self.tx.try_send(Bytes::from(format!(": close {code} {reason}\n\n")));
        ctx.stop();
    }

    fn opened(conn: &mut SseConnection, ctx: &mut Self::Context) {
        let Some(opening) = conn.transport.opening.take() else { return };
        // The connection ends with its response body, and with its client:
        // a client that closes its socket is noticed within PEER_CHECK.
        let tx = conn.transport.tx.clone();
        ctx.spawn(async move { tx.closed().await }.into_actor(conn).map(|(), _, ctx| ctx.stop()));
        ctx.run_interval(PEER_CHECK, |conn, ctx| {
            if conn.control().peer_gone() {
                ctx.stop();
            }
        });
        let _ = conn.transport.push(ctx, Bytes::from_static(b": subscribed\n\n"));
        let Opening { rooms, ready } = *opening;
        let Some(user) = conn.session().user().cloned() else { return };
        // Joins run side by side, and the mailbox keeps flowing meanwhile.
        let joins = conn.join_all(rooms, user, ctx);
        ctx.spawn(joins.map(move |joined, _, ctx| {
            if ready.send(joined.is_ok()).is_err() || joined.is_err() {
                ctx.stop();
            }
        }));
    }

    /// The response body releases the socket, when actix-http drops it.
    fn stopped(&mut self, _: &Control) {}
}

/// `frame` as one event on one `data:` line. JSON needs no line break, but a
/// client's `data` may carry some between its tokens (it is relayed
/// verbatim); there they are whitespace, and become spaces.
fn event(frame: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + 8);
    out.extend_from_slice(b"data: ");
    let start = out.len();
    out.extend_from_slice(frame.as_bytes());
    for byte in &mut out[start..] {
        if matches!(*byte, b'\r' | b'\n') {
            *byte = b' ';
        }
    }
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The response body: whatever the connection writes, until it stops or the
/// client leaves.
struct EventStream {
    rx: mpsc::Receiver<Bytes>,
    control: Arc<Control>,
    _slot: Option<OpenSlot>,
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Drop for EventStream {
    /// actix-http drops the body before it closes the socket.
    fn drop(&mut self) {
        self.control.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_data_line() {
        assert_eq!(&event(r#"{"type":"message"}"#)[..], b"data: {\"type\":\"message\"}\n\n");
    }

    #[test]
    fn line_breaks_in_a_frame_become_spaces_on_one_line() {
        let text = "{\"type\":\"message\",\"data\":{\r\n\"a\":1,\n\"b\":\"x y\"\r}}";
        let chunk = event(text);
        let chunk = std::str::from_utf8(&chunk).unwrap();
        let line = chunk.strip_suffix("\n\n").unwrap().strip_prefix("data: ").unwrap();
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value, serde_json::json!({"type": "message", "data": {"a": 1, "b": "x y"}}));
    }

    #[test]
    fn rooms_come_from_every_parameter_deduplicated() {
        let rooms = requested_rooms("rooms=b,a&token=x&rooms=a,c", 10).unwrap();
        assert_eq!(rooms.iter().map(|r| &**r).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(requested_rooms("", 10).unwrap().is_empty());
        assert!(requested_rooms("rooms=", 10).unwrap().is_empty());
    }

    #[test]
    fn bad_and_too_many_rooms_are_refused() {
        assert!(requested_rooms("rooms=a,,b", 10).unwrap_err().contains("invalid room name"));
        assert!(requested_rooms("rooms=a%20b", 10).unwrap_err().contains("\"a b\""));
        assert!(requested_rooms("rooms=a,b,c", 2).unwrap_err().contains("too many rooms"));
    }
}
