//! The WebSocket transport: each connection is an actix actor
//! (actix-web-actors) that decodes client frames, drives its [`Session`], and
//! writes whatever rooms and presence queue in its mailbox.
//!
//! The mailbox is bounded by `limits.outbound_queue`; rooms reach it only with
//! `try_send`. Frames from one client are handled strictly in order: a frame
//! that needs an answer from another actor (join, presence, status) pauses the
//! connection's input until the answer is written, so a `publish` sent right
//! after a `join` always finds the room joined.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use serde_json::value::RawValue;

use crate::auth::Identity;
use crate::connection::control::SocketFd;
use crate::connection::rate::{self, RateLimiter, RateRule};
use crate::connection::session::{JoinRefusal, Session};
use crate::connection::{Control, Member, Outbound, Outbox};
use crate::metrics::Refusal;
use crate::node::{Node, OpenSlot};
use crate::protocol::{self, close, ClientFrame, ClientKind, Encoded, ErrorCode, Request, ServerFrame};
use crate::transport::frame_guard::FrameGuard;
use crate::transport::http::error_response;

/// How the upgrade request authenticated.
pub enum Handshake {
    /// No token on the request.
    None,
    Valid(Identity),
    /// A token was present and is bad: the connection closes with 4002.
    Invalid,
}

/// `GET /ws`: checks the node can take the connection and the request's
/// origin, authenticates from the header or `?token=`, then upgrades.
pub async fn upgrade(req: HttpRequest, stream: web::Payload, node: web::Data<Node>) -> actix_web::Result<HttpResponse> {
    let node = node.into_inner();
    if node.is_draining() {
        node.metrics.refused(Refusal::Draining);
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
    }
    if !origin_allowed(&node.config.server.allowed_origins, &req) {
        node.metrics.refused(Refusal::Origin);
        return Ok(error_response(StatusCode::FORBIDDEN, "this origin may not open connections"));
    }
    let Some(slot) = node.try_open() else {
        node.metrics.refused(Refusal::MaxConnections);
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is at its connection limit"));
    };
    let socket = req.conn_data::<SocketFd>().map(|fd| fd.0);
    let handshake = match handshake_token(&req) {
        None => Handshake::None,
        Some(token) => match node.auth.verify(&token) {
            Ok(identity) => Handshake::Valid(identity),
            Err(error) => {
                tracing::debug!(%error, "handshake token refused");
                Handshake::Invalid
            }
        },
    };
    let max = node.config.limits.max_message_bytes;
    let control = Arc::new(Control::new(socket));
    let stream = FrameGuard::new(stream, max, control.clone());
    let conn = WsConnection::new(node, handshake, slot, control);
    ws::WsResponseBuilder::new(conn, &req, stream).frame_size(max).start()
}

/// Whether the request's `Origin` may open a connection. Requests without an
/// `Origin` (non-browser clients) are allowed: the check guards browsers
/// against cross-site WebSocket hijacking, and browsers always send one.
fn origin_allowed(allowed: &[String], req: &HttpRequest) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(actix_web::http::header::ORIGIN) {
        None => true,
        Some(origin) => origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

/// The token of an upgrade request: `Authorization: Bearer` first, then `?token=`.
fn handshake_token(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(value) = header {
        let mut parts = value.splitn(2, ' ');
        if parts.next().is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer")) {
            return Some(parts.next().unwrap_or("").trim().to_owned());
        }
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// One WebSocket connection.
pub struct WsConnection {
    node: Arc<Node>,
    session: Session,
    control: Arc<Control>,
    _slot: OpenSlot,
    handshake: Option<Handshake>,
    rate: RateLimiter,
    /// Consecutive rate-limited frames.
    strikes: u32,
    /// Last time anything (a frame, a pong) came from the client.
    last_seen: Instant,
    next_ping: Instant,
    /// Set while `auth.required` and the connection has not authenticated.
    auth_deadline: Option<Instant>,
    /// A fragmented message under way.
    fragments: Option<Fragments>,
}

/// A fragmented message being received.
enum Fragments {
    /// Text, reassembled for `on_text`.
    Text(Vec<u8>),
    /// Binary, already refused; only its size is counted, against the limit.
    Binary(usize),
}

impl Fragments {
    fn len(&self) -> usize {
        match self {
            Self::Text(bytes) => bytes.len(),
            Self::Binary(len) => *len,
        }
    }
}

type Ctx = WebsocketContext<WsConnection>;

impl WsConnection {
    pub fn new(node: Arc<Node>, handshake: Handshake, slot: OpenSlot, control: Arc<Control>) -> Self {
        let session = Session::new(node.next_conn());
        let now = Instant::now();
        let next_ping = now + Duration::from_millis(node.config.heartbeat.interval_ms);
        Self {
            node,
            session,
            control,
            _slot: slot,
            handshake: Some(handshake),
            rate: RateLimiter::default(),
            strikes: 0,
            last_seen: now,
            next_ping,
            auth_deadline: None,
            fragments: None,
        }
    }

    fn outbox(&self, ctx: &mut Ctx) -> Outbox {
        Outbox::new(ctx.address().recipient(), self.control.clone())
    }

    fn send(&self, ctx: &mut Ctx, frame: Encoded) {
        self.node.metrics.frames_out(frame.kind, 1);
        ctx.text(frame.text);
    }

    fn reply(&self, ctx: &mut Ctx, frame: ServerFrame<'_>) {
        self.send(ctx, frame.encode());
    }

    fn error(&self, ctx: &mut Ctx, code: ErrorCode, message: &str, id: Option<&RawValue>) {
        self.reply(ctx, ServerFrame::Error { code, message, id });
    }

    fn close(&mut self, ctx: &mut Ctx, code: u16, reason: &str) {
        ctx.close(Some(CloseReason { code: CloseCode::from(code), description: Some(reason.to_owned()) }));
        ctx.stop();
    }

    fn welcome(&self, ctx: &mut Ctx) {
        let conn = self.node.conn_label(self.session.id);
        let frame = ServerFrame::Welcome {
            conn: &conn,
            user: self.session.user().map(|u| &**u),
            node: &self.node.id,
            heartbeat_ms: self.node.config.heartbeat.interval_ms,
        };
        self.reply(ctx, frame);
    }

    /// Arms the connection's one timer for its next duty: a ping, the
    /// silence deadline, or the authentication deadline.
    fn schedule_tick(&self, ctx: &mut Ctx) {
        let silence = self.last_seen + Duration::from_millis(self.node.config.heartbeat.timeout_ms);
        let mut at = self.next_ping.min(silence);
        if let Some(deadline) = self.auth_deadline {
            at = at.min(deadline);
        }
        ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| act.tick(ctx));
    }

    fn tick(&mut self, ctx: &mut Ctx) {
        let now = Instant::now();
        if self.auth_deadline.is_some_and(|deadline| now >= deadline) {
            return self.close(ctx, close::AUTH_TIMEOUT, close::AUTH_TIMEOUT_REASON);
        }
        let heartbeat = &self.node.config.heartbeat;
        if now.duration_since(self.last_seen) >= Duration::from_millis(heartbeat.timeout_ms) {
            tracing::debug!(conn = %self.session.id, "heartbeat timeout");
            self.node.metrics.heartbeat_timeouts.inc();
            return self.close(ctx, close::NORMAL, close::HEARTBEAT_REASON);
        }
        if now >= self.next_ping {
            ctx.ping(b"");
            self.next_ping = now + Duration::from_millis(heartbeat.interval_ms);
        }
        self.schedule_tick(ctx);
    }

    /// Takes a token from the connection's bucket; past `rate_strikes`
    /// refusals in a row the connection closes with 1008.
    fn admit(&mut self, id: Option<&RawValue>, ctx: &mut Ctx) -> bool {
        let limits = &self.node.config.limits;
        if self.rate.allow(RateRule::new(limits.rate_per_sec, limits.rate_burst), rate::now_us()) {
            self.strikes = 0;
            return true;
        }
        self.node.metrics.rate_limited.inc();
        self.strikes += 1;
        if self.strikes >= limits.rate_strikes {
            self.node.metrics.rate_limit_closes.inc();
            self.close(ctx, close::POLICY, close::POLICY_REASON);
        } else {
            self.error(ctx, ErrorCode::RateLimited, "too many frames, slow down", id);
        }
        false
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx) {
        let decoded = protocol::decode(text);
        let kind = decoded.as_ref().map_or(ClientKind::Invalid, |r| r.frame.kind());
        self.node.metrics.frame_in(kind);
        let id = match &decoded {
            Ok(request) => request.id,
            Err(rejection) => rejection.id,
        };
        if !self.admit(id, ctx) {
            return;
        }
        match decoded {
            Ok(Request { id, frame: ClientFrame::Auth { token } }) => self.on_auth(token.as_deref(), id, ctx),
            _ if self.session.identity().is_none() => {
                self.close(ctx, close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON)
            }
            Err(rejection) => self.send(ctx, rejection.encode()),
            Ok(request) => self.dispatch(request, ctx),
        }
    }

    fn dispatch(&mut self, Request { id, frame }: Request<'_>, ctx: &mut Ctx) {
        let Some(user) = self.session.user().cloned() else { return };
        let conn = self.session.id;
        match frame {
            ClientFrame::Auth { .. } => unreachable!("auth frames are handled before dispatch"),
            ClientFrame::Join { room } => self.on_join(room.into(), id, ctx),
            ClientFrame::Leave { room } => {
                self.session.leave(&self.node, &room);
                self.reply(ctx, ServerFrame::Left { room: &room, id });
            }
            ClientFrame::Publish { room, data, echo } => match self.session.room(&room) {
                Some(handle) => handle.publish(conn, user, data, echo, id),
                None => self.error(ctx, ErrorCode::NotInRoom, "publish to a room this connection has not joined", id),
            },
            ClientFrame::Typing { room, typing } => match self.session.room(&room) {
                Some(handle) => {
                    handle.typing(conn, user, typing);
                    if id.is_some() {
                        self.reply(ctx, ServerFrame::Ack { seq: None, id });
                    }
                }
                None => self.error(ctx, ErrorCode::NotInRoom, "typing in a room this connection has not joined", id),
            },
            ClientFrame::Direct { to, data } => {
                let frame = ServerFrame::Direct { from: &user, data, ts: protocol::now_ms() }.encode();
                self.node.presence.direct(to.into(), frame);
                if id.is_some() {
                    self.reply(ctx, ServerFrame::Ack { seq: None, id });
                }
            }
            ClientFrame::Presence { room } => self.on_presence(room.into(), id, ctx),
            ClientFrame::Status { users } => {
                let id = id.map(ToOwned::to_owned);
                let query = self.node.presence.status(users);
                ctx.wait(query.into_actor(self).map(move |result, act, ctx| match result {
                    Ok(online) => act.reply(ctx, ServerFrame::Status { online: &online, id: id.as_deref() }),
                    Err(_) => act.error(ctx, ErrorCode::Internal, "presence is unavailable", id.as_deref()),
                }));
            }
            ClientFrame::Ping => self.reply(ctx, ServerFrame::Pong { id }),
        }
    }

    fn on_auth(&mut self, token: Option<&str>, id: Option<&RawValue>, ctx: &mut Ctx) {
        let identity = match token.map(|t| self.node.auth.verify(t)) {
            Some(Ok(identity)) => identity,
            Some(Err(error)) => {
                tracing::debug!(conn = %self.session.id, %error, "auth frame refused");
                return self.close(ctx, close::INVALID_TOKEN, close::INVALID_TOKEN_REASON);
            }
            None => return self.close(ctx, close::INVALID_TOKEN, close::INVALID_TOKEN_REASON),
        };
        let same_user = self.session.user() == Some(&identity.user);
        if same_user {
            self.session.refresh(identity.clone());
        } else if self.session.identity().is_some() && !self.session.is_anonymous() {
            return self.error(ctx, ErrorCode::BadRequest, "this connection is already authenticated as another user", id);
        } else {
            self.auth_deadline = None;
            let outbox = self.outbox(ctx);
            self.session.authenticate(&self.node, identity.clone(), false, outbox);
        }
        self.reply(ctx, ServerFrame::Authed { user: &identity.user, id });
    }

    fn on_join(&mut self, room: Arc<str>, id: Option<&RawValue>, ctx: &mut Ctx) {
        match self.session.check_join(&room, self.node.config.limits.max_rooms_per_conn) {
            Err(JoinRefusal::Forbidden) => {
                return self.error(ctx, ErrorCode::Forbidden, "this user may not join that room", id)
            }
            Err(JoinRefusal::TooManyRooms) => {
                return self.error(ctx, ErrorCode::TooManyRooms, "this connection is in too many rooms", id)
            }
            Ok(()) => {}
        }
        let Some(user) = self.session.user().cloned() else { return };
        let is_new = self.session.joining(&room);
        let member = Member { conn: self.session.id, user, outbox: self.outbox(ctx) };
        let id = id.map(ToOwned::to_owned);
        let join = self.node.rooms.join(room.clone(), member);
        ctx.wait(join.into_actor(self).map(move |result, act, ctx| match result {
            Ok((handle, users)) => {
                act.session.joined(&room, handle);
                act.reply(ctx, ServerFrame::Joined { room: &room, users: &users, id: id.as_deref() });
            }
            Err(error) => {
                tracing::warn!(%room, %error, "join failed");
                if is_new {
                    act.session.join_failed(&room);
                }
                act.error(ctx, ErrorCode::Internal, "the room is unavailable, try again", id.as_deref());
            }
        }));
    }

    fn on_presence(&mut self, room: Arc<str>, id: Option<&RawValue>, ctx: &mut Ctx) {
        if !self.session.identity().is_some_and(|i| i.may_join(&room)) {
            return self.error(ctx, ErrorCode::Forbidden, "this user may not see that room", id);
        }
        let id = id.map(ToOwned::to_owned);
        let query = self.node.presence.room_users(room.clone());
        ctx.wait(query.into_actor(self).map(move |result, act, ctx| match result {
            Ok(users) => act.reply(ctx, ServerFrame::Presence { room: &room, users: &users, id: id.as_deref() }),
            Err(_) => act.error(ctx, ErrorCode::Internal, "presence is unavailable", id.as_deref()),
        }));
    }

    fn on_binary(&mut self, ctx: &mut Ctx) {
        self.node.metrics.frame_in(ClientKind::Invalid);
        if !self.admit(None, ctx) {
            return;
        }
        if self.session.identity().is_none() {
            return self.close(ctx, close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON);
        }
        self.error(ctx, ErrorCode::BadRequest, "binary frames are not supported", None);
    }

    /// Reassembles a fragmented text message and hands it to `on_text`;
    /// a fragmented binary message is refused once and counted to its end.
    /// Every fragment takes a rate token, and the whole message is held to
    /// `limits.max_message_bytes`.
    fn on_fragment(&mut self, item: Item, ctx: &mut Ctx) {
        let last = matches!(item, Item::Last(_));
        match (item, self.fragments.as_mut()) {
            (Item::FirstText(bytes), _) => self.fragments = Some(Fragments::Text(bytes.to_vec())),
            (Item::FirstBinary(bytes), _) => {
                self.fragments = Some(Fragments::Binary(bytes.len()));
                self.on_binary(ctx);
            }
            (Item::Continue(bytes) | Item::Last(bytes), Some(fragments)) => {
                match fragments {
                    Fragments::Text(buffer) => buffer.extend_from_slice(&bytes),
                    Fragments::Binary(len) => *len += bytes.len(),
                }
                if !self.admit(None, ctx) {
                    return;
                }
            }
            // A continuation with nothing under way: the codec reports it as a
            // protocol error before it gets here.
            (Item::Continue(_) | Item::Last(_), None) => return,
        }
        if self.fragments.as_ref().is_some_and(|f| f.len() > self.node.config.limits.max_message_bytes) {
            self.fragments = None;
            self.node.metrics.oversized.inc();
            return self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
        }
        if !last {
            return;
        }
        if let Some(Fragments::Text(buffer)) = self.fragments.take() {
            match String::from_utf8(buffer) {
                Ok(text) => self.on_text(&text, ctx),
                Err(_) => self.close(ctx, 1007, "invalid utf-8"),
            }
        }
    }
}

impl Actor for WsConnection {
    type Context = Ctx;

    fn started(&mut self, ctx: &mut Ctx) {
        ctx.set_mailbox_capacity(self.node.config.limits.outbound_queue);
        self.node.metrics.connections_accepted.inc();
        let outbox = self.outbox(ctx);
        self.node.connections.insert(self.session.id, outbox.clone());
        tracing::debug!(conn = %self.session.id, "connection opened");
        match self.handshake.take() {
            Some(Handshake::Invalid) => {
                return self.close(ctx, close::INVALID_TOKEN, close::INVALID_TOKEN_REASON);
            }
            Some(Handshake::Valid(identity)) => self.session.authenticate(&self.node, identity, false, outbox),
            Some(Handshake::None) | None if self.node.config.auth.required => {
                self.auth_deadline = Some(Instant::now() + Duration::from_millis(self.node.config.auth.timeout_ms));
            }
            Some(Handshake::None) | None => {
                let identity = Identity::anonymous(&self.node.conn_label(self.session.id));
                self.session.authenticate(&self.node, identity, true, outbox);
            }
        }
        self.welcome(ctx);
        self.schedule_tick(ctx);
    }

    fn stopped(&mut self, _: &mut Ctx) {
        self.session.leave_everything(&self.node);
        self.node.connections.remove(self.session.id);
        self.control.release();
        tracing::debug!(conn = %self.session.id, "connection closed");
    }
}

impl Handler<Outbound> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Ctx) {
        match msg {
            Outbound::Frame(frame) => self.send(ctx, frame),
            Outbound::Close { code, reason } => self.close(ctx, code, reason),
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for WsConnection {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Ctx) {
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.on_binary(ctx),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                self.node.metrics.oversized.inc();
                self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
            }
            Err(_) if self.control.is_oversized() => {
                self.node.metrics.oversized.inc();
                self.close(ctx, close::TOO_BIG, close::TOO_BIG_REASON);
            }
            Err(error) => {
                tracing::debug!(conn = %self.session.id, %error, "websocket protocol error");
                self.close(ctx, 1002, "protocol error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one `WsConnection`; a million of them make
    /// each byte here a megabyte. Growing it is a decision, not an accident.
    #[test]
    fn connection_state_stays_small() {
        let (state, control) = (std::mem::size_of::<WsConnection>(), std::mem::size_of::<Control>());
        println!("WsConnection: {state} bytes, Control: {control} bytes");
        assert!(state <= 256, "WsConnection grew to {state} bytes");
        assert!(control <= 32, "Control grew to {control} bytes");
    }
}
