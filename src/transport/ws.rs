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
use actix_web::{web, HttpRequest, HttpResponse};
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use serde_json::value::RawValue;

use crate::auth::Identity;
use crate::connection::session::{JoinRefusal, Session};
use crate::connection::Outbound;
use crate::node::Node;
use crate::protocol::{self, close, ClientFrame, ClientKind, Encoded, ErrorCode, Request, ServerFrame};

/// How the upgrade request authenticated.
pub enum Handshake {
    /// No token on the request.
    None,
    Valid(Identity),
    /// A token was present and is bad: the connection closes with 4002.
    Invalid,
}

/// `GET /ws`: authenticates from the header or `?token=`, then upgrades.
pub async fn upgrade(req: HttpRequest, stream: web::Payload, node: web::Data<Node>) -> actix_web::Result<HttpResponse> {
    let node = node.into_inner();
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
    let conn = WsConnection::new(node, handshake);
    ws::WsResponseBuilder::new(conn, &req, stream).frame_size(max).start()
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
    handshake: Option<Handshake>,
    last_seen: Instant,
    /// A fragmented text message being reassembled.
    fragments: Option<Vec<u8>>,
    auth_timer: Option<SpawnHandle>,
}

type Ctx = WebsocketContext<WsConnection>;

impl WsConnection {
    pub fn new(node: Arc<Node>, handshake: Handshake) -> Self {
        let session = Session::new(node.next_conn());
        Self { node, session, handshake: Some(handshake), last_seen: Instant::now(), fragments: None, auth_timer: None }
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

    fn start_heartbeat(&self, ctx: &mut Ctx) {
        let interval = Duration::from_millis(self.node.config.heartbeat.interval_ms);
        let timeout = Duration::from_millis(self.node.config.heartbeat.timeout_ms);
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_seen.elapsed() >= timeout {
                tracing::debug!(conn = %act.session.id, "heartbeat timeout");
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx) {
        let decoded = protocol::decode(text);
        let kind = decoded.as_ref().map_or(ClientKind::Invalid, |r| r.frame.kind());
        self.node.metrics.frame_in(kind);
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
            if let Some(timer) = self.auth_timer.take() {
                ctx.cancel_future(timer);
            }
            self.session.authenticate(&self.node, identity.clone(), false, ctx.address().recipient());
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
        let member = crate::connection::Member { conn: self.session.id, user, outbox: ctx.address().recipient() };
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
        if self.session.identity().is_none() {
            return self.close(ctx, close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON);
        }
        self.error(ctx, ErrorCode::BadRequest, "binary frames are not supported", None);
    }

    /// Reassembles a fragmented text message and hands it to `on_text`.
    fn on_fragment(&mut self, item: Item, ctx: &mut Ctx) {
        let last = matches!(item, Item::Last(_));
        match item {
            Item::FirstText(bytes) => self.fragments = Some(bytes.to_vec()),
            Item::FirstBinary(_) => {
                self.fragments = None;
                return self.on_binary(ctx);
            }
            // Without a text message under way this continues a binary one: already answered.
            Item::Continue(bytes) | Item::Last(bytes) => match self.fragments.as_mut() {
                Some(buffer) => buffer.extend_from_slice(&bytes),
                None => return,
            },
        }
        if self.fragments.as_ref().is_some_and(|b| b.len() > self.node.config.limits.max_message_bytes) {
            self.fragments = None;
            return self.close(ctx, close::TOO_BIG, "message too big");
        }
        if let Some(buffer) = self.fragments.take_if(|_| last) {
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
        self.node.metrics.connections_open.inc();
        self.node.metrics.connections_accepted.inc();
        tracing::debug!(conn = %self.session.id, "connection opened");
        match self.handshake.take() {
            Some(Handshake::Invalid) => {
                return self.close(ctx, close::INVALID_TOKEN, close::INVALID_TOKEN_REASON);
            }
            Some(Handshake::Valid(identity)) => {
                self.session.authenticate(&self.node, identity, false, ctx.address().recipient());
            }
            Some(Handshake::None) | None if self.node.config.auth.required => {
                let timeout = Duration::from_millis(self.node.config.auth.timeout_ms);
                self.auth_timer = Some(ctx.run_later(timeout, |act, ctx| {
                    if act.session.identity().is_none() {
                        act.close(ctx, close::AUTH_TIMEOUT, close::AUTH_TIMEOUT_REASON);
                    }
                }));
            }
            Some(Handshake::None) | None => {
                let identity = Identity::anonymous(&self.node.conn_label(self.session.id));
                self.session.authenticate(&self.node, identity, true, ctx.address().recipient());
            }
        }
        self.welcome(ctx);
        self.start_heartbeat(ctx);
    }

    fn stopped(&mut self, _: &mut Ctx) {
        self.session.leave_everything(&self.node);
        self.node.metrics.connections_open.dec();
        tracing::debug!(conn = %self.session.id, "connection closed");
    }
}

impl Handler<Outbound> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Ctx) {
        match msg {
            Outbound::Frame(frame) => self.send(ctx, frame),
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
            Err(ProtocolError::Overflow) => self.close(ctx, close::TOO_BIG, "message too big"),
            Err(error) => {
                tracing::debug!(conn = %self.session.id, %error, "websocket protocol error");
                self.close(ctx, 1002, "protocol error");
            }
        }
    }
}
