//! The connection core: one actor type, [`Connection<T>`], for every
//! transport. It owns the [`Session`] (identity, rooms, presence), the rate
//! limit, the heartbeat and the authentication deadline, decodes and answers
//! client frames, and writes whatever rooms and presence queue in its mailbox
//! through its [`Transport`], which is the only part that knows the socket.
//!
//! The mailbox is bounded by `limits.outbound_queue`; rooms reach it only with
//! `try_send`. Frames from one client are handled strictly in order: a frame
//! that needs an answer from another actor (join, presence, status) pauses the
//! connection's input until the answer is written, so a `publish` sent right
//! after a `join` always finds the room joined.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::value::RawValue;

use crate::auth::Identity;
use crate::connection::rate::{self, RateLimiter, RateRule};
use crate::connection::session::{JoinRefusal, Session};
use crate::connection::{Control, Member, Outbound, Outbox};
use crate::metrics::{ActorKind, Fault, Source, NO_CLOSE_CODE};
use crate::node::{Node, OpenSlot};
use crate::protocol::{self, close, ClientFrame, ClientKind, Encoded, ErrorCode, Request, ServerFrame};
use crate::transport::admission::{Admitted, Handshake};
use crate::transport::{Full, Transport};

/// One client connection, carried by transport `T`.
pub struct Connection<T: Transport> {
    node: Arc<Node>,
    session: Session,
    control: Arc<Control>,
    _slot: Option<OpenSlot>,
    handshake: Option<Handshake>,
    rate: RateLimiter,
    /// Consecutive rate-limited frames.
    strikes: u32,
    /// Last time anything (a frame, a pong) came from the client.
    last_seen: Instant,
    next_ping: Instant,
    /// Set while `auth.required` and the connection has not authenticated.
    auth_deadline: Option<Instant>,
    /// The code the connection is closing with (0: not closing yet).
    close_code: u16,
    /// What only the transport keeps.
    pub transport: T,
}

impl<T: Transport> Connection<T> {
    /// A connection admitted by [`crate::transport::admission::admit`], to be
    /// started in `T::Context`. `id` is its session's id, from [`Node::next_conn`].
    pub fn new(node: Arc<Node>, id: super::ConnId, admitted: Admitted, transport: T) -> Self {
        let now = Instant::now();
        let next_ping = now + Duration::from_millis(node.config.heartbeat.interval_ms);
        Self {
            node,
            session: Session::new(id),
            control: admitted.control,
            _slot: admitted.slot,
            handshake: Some(admitted.handshake),
            rate: RateLimiter::default(),
            strikes: 0,
            last_seen: now,
            next_ping,
            auth_deadline: None,
            close_code: 0,
            transport,
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Where rooms and presence deliver to this connection.
    pub fn outbox(&self, ctx: &mut T::Context) -> Outbox {
        Outbox::new(ctx.address().recipient(), self.control.clone())
    }

    /// Runs `f`; a panic in it closes this connection alone, with 1011, and
    /// its rooms and presence are cleaned up as for any close.
    pub fn guarded(&mut self, ctx: &mut T::Context, f: impl FnOnce(&mut Self, &mut T::Context)) {
        let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| f(self, ctx))) else { return };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        self.node.metrics.actor_failed(ActorKind::Connection);
        tracing::error!(conn = %self.session.id, panic = %what, "connection failed; closing it with 1011");
        // Unless it was already closing when it failed: one close is enough.
        if !matches!(ctx.state(), ActorState::Stopping | ActorState::Stopped) {
            self.close(ctx, close::INTERNAL, close::INTERNAL_REASON);
        }
    }

    /// Records that the client was heard from (any frame or pong).
    pub fn heard(&mut self) {
        self.last_seen = Instant::now();
    }

    fn send(&mut self, ctx: &mut T::Context, frame: Encoded) {
        if !self.control.carries(frame.kind) {
            return;
        }
        let (kind, len) = (frame.kind, frame.text.len());
        match self.transport.write(ctx, frame) {
            Ok(()) => {
                self.node.metrics.frames_out(kind, 1);
                self.node.metrics.bytes_out(T::KIND, len);
            }
            Err(Full) => self.outbox(ctx).slow_consumer(&self.node.metrics),
        }
    }

    fn reply(&mut self, ctx: &mut T::Context, frame: ServerFrame<'_>) {
        self.send(ctx, frame.encode());
    }

    pub fn error(&mut self, ctx: &mut T::Context, code: ErrorCode, message: &str, id: Option<&RawValue>) {
        self.reply(ctx, ServerFrame::Error { code, message, id });
    }

    /// Ends the connection with `code` and `reason`. The first close is the
    /// one counted: by code, and by fault when the client caused it.
    pub fn close(&mut self, ctx: &mut T::Context, code: u16, reason: &str) {
        if self.close_code == 0 {
            self.close_code = code;
            let fault = match code {
                close::POLICY => Some(Fault::RateLimit),
                close::TOO_BIG => Some(Fault::Size),
                close::AUTH_TIMEOUT | close::INVALID_TOKEN | close::NOT_AUTHENTICATED => Some(Fault::Auth),
                // Slow consumers are counted when they are found, which may be
                // long before (or instead of) their close.
                _ => None,
            };
            if let Some(fault) = fault {
                self.node.metrics.connection_dropped(fault);
            }
            tracing::debug!(conn = %self.session.id, code, reason, "closing connection");
        }
        self.transport.close(ctx, code, reason);
    }

    /// Records the close code the client sent.
    pub fn closed_by_client(&mut self, code: u16) {
        if self.close_code == 0 {
            self.close_code = code;
        }
    }

    fn welcome(&mut self, ctx: &mut T::Context) {
        let conn = self.node.conn_label(self.session.id);
        let user = self.session.user().cloned();
        let node = self.node.id.clone();
        let frame = ServerFrame::Welcome {
            conn: &conn,
            user: user.as_deref(),
            node: &node,
            heartbeat_ms: self.node.config.heartbeat.interval_ms,
        };
        self.reply(ctx, frame);
    }

    /// Arms the connection's one timer for its next duty: a ping, the
    /// silence deadline, or the authentication deadline.
    fn schedule_tick(&self, ctx: &mut T::Context) {
        let mut at = self.next_ping;
        if T::DUPLEX {
            at = at.min(self.last_seen + Duration::from_millis(self.node.config.heartbeat.timeout_ms));
        }
        if let Some(deadline) = self.auth_deadline {
            at = at.min(deadline);
        }
        ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| act.tick(ctx));
    }

    fn tick(&mut self, ctx: &mut T::Context) {
        let now = Instant::now();
        if self.auth_deadline.is_some_and(|deadline| now >= deadline) {
            return self.close(ctx, close::AUTH_TIMEOUT, close::AUTH_TIMEOUT_REASON);
        }
        let heartbeat = &self.node.config.heartbeat;
        if T::DUPLEX && now.duration_since(self.last_seen) >= Duration::from_millis(heartbeat.timeout_ms) {
            tracing::debug!(conn = %self.session.id, "heartbeat timeout");
            self.node.metrics.connection_dropped(Fault::Heartbeat);
            return self.close(ctx, close::NORMAL, close::HEARTBEAT_REASON);
        }
        if now >= self.next_ping {
            self.next_ping = now + Duration::from_millis(heartbeat.interval_ms);
            if self.transport.ping(ctx).is_err() {
                self.outbox(ctx).slow_consumer(&self.node.metrics);
            }
        }
        self.schedule_tick(ctx);
    }

    /// Takes a token from the connection's bucket; past `rate_strikes`
    /// refusals in a row the connection closes with 1008.
    pub fn admit(&mut self, id: Option<&RawValue>, ctx: &mut T::Context) -> bool {
        let limits = &self.node.config.limits;
        if self.rate.allow(RateRule::new(limits.rate_per_sec, limits.rate_burst), rate::now_us()) {
            self.strikes = 0;
            return true;
        }
        self.node.metrics.frames_dropped(Fault::RateLimit, 1);
        self.strikes += 1;
        if self.strikes >= limits.rate_strikes {
            self.close(ctx, close::POLICY, close::POLICY_REASON);
        } else {
            self.error(ctx, ErrorCode::RateLimited, "too many frames, slow down", id);
        }
        false
    }

    /// Handles one client text frame.
    pub fn on_text(&mut self, text: &str, ctx: &mut T::Context) {
        let decoded = protocol::decode(text);
        let kind = decoded.as_ref().map_or(ClientKind::Invalid, |r| r.frame.kind());
        self.node.metrics.frame_in(kind, T::KIND, text.len());
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

    /// Handles a client frame the protocol does not carry (a binary message of `len` bytes).
    pub fn on_unsupported(&mut self, len: usize, ctx: &mut T::Context) {
        self.node.metrics.frame_in(ClientKind::Invalid, T::KIND, len);
        if !self.admit(None, ctx) {
            return;
        }
        if self.session.identity().is_none() {
            return self.close(ctx, close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON);
        }
        self.error(ctx, ErrorCode::BadRequest, "binary frames are not supported", None);
    }

    fn dispatch(&mut self, Request { id, frame }: Request<'_>, ctx: &mut T::Context) {
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
                Some(handle) => {
                    self.node.metrics.published(Source::Client);
                    handle.publish(conn, user, data, echo, id);
                }
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
                if let Some(cluster) = &self.node.cluster {
                    cluster.direct(&to, &frame.text);
                }
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

    fn on_auth(&mut self, token: Option<&str>, id: Option<&RawValue>, ctx: &mut T::Context) {
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

    fn on_join(&mut self, room: Arc<str>, id: Option<&RawValue>, ctx: &mut T::Context) {
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
        let id = id.map(ToOwned::to_owned);
        let join = self.join(room.clone(), user, ctx);
        ctx.wait(join.map(move |result, act, ctx| match result {
            Ok(users) => act.reply(ctx, ServerFrame::Joined { room: &room, users: &users, id: id.as_deref() }),
            Err(()) => act.error(ctx, ErrorCode::Internal, "the room is unavailable, try again", id.as_deref()),
        }));
    }

    /// Joins every room of `rooms` as `user` at once (already checked against
    /// the session's permissions and limits). Resolves when all have landed:
    /// `Err(())` if any failed (those that did not are forgotten; the others
    /// stay joined).
    pub fn join_all(
        &mut self,
        rooms: Vec<Arc<str>>,
        user: Arc<str>,
        ctx: &mut T::Context,
    ) -> impl ActorFuture<Self, Output = Result<(), ()>> + 'static {
        let outbox = self.outbox(ctx);
        let joins: Vec<_> = rooms
            .into_iter()
            .map(|room| {
                self.session.joining(&room);
                let member = Member { conn: self.session.id, user: user.clone(), outbox: outbox.clone() };
                let join = self.node.rooms.join(room.clone(), member);
                async move { (room, join.await) }
            })
            .collect();
        futures_util::future::join_all(joins).into_actor(self).map(|results, act, _| {
            let mut outcome = Ok(());
            for (room, result) in results {
                match result {
                    Ok((handle, _)) => act.session.joined(&room, handle),
                    Err(error) => {
                        tracing::warn!(%room, %error, "join failed");
                        act.session.join_failed(&room);
                        outcome = Err(());
                    }
                }
            }
            outcome
        })
    }

    /// Joins `room` as `user` (already checked against the session's
    /// permissions and limits). The future resolves, with the users now in the room, once
    /// the room has the member; run it with `ctx.wait` so the connection's
    /// next frame finds the room joined.
    pub fn join(
        &mut self,
        room: Arc<str>,
        user: Arc<str>,
        ctx: &mut T::Context,
    ) -> impl ActorFuture<Self, Output = Result<Vec<Arc<str>>, ()>> + 'static {
        let is_new = self.session.joining(&room);
        let member = Member { conn: self.session.id, user, outbox: self.outbox(ctx) };
        let join = self.node.rooms.join(room.clone(), member);
        join.into_actor(self).map(move |result, act, _| match result {
            Ok((handle, users)) => {
                act.session.joined(&room, handle);
                Ok(users)
            }
            Err(error) => {
                tracing::warn!(%room, %error, "join failed");
                if is_new {
                    act.session.join_failed(&room);
                }
                Err(())
            }
        })
    }

    fn on_presence(&mut self, room: Arc<str>, id: Option<&RawValue>, ctx: &mut T::Context) {
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
}

impl<T: Transport> Actor for Connection<T> {
    type Context = T::Context;

    fn started(&mut self, ctx: &mut T::Context) {
        T::set_mailbox_capacity(ctx, self.node.config.limits.outbound_queue);
        self.node.metrics.connection_accepted(T::KIND);
        let outbox = self.outbox(ctx);
        self.node.connections.insert(self.session.id, outbox.clone());
        tracing::debug!(conn = %self.session.id, transport = T::KIND.as_str(), "connection opened");
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
        T::opened(self, ctx);
        self.schedule_tick(ctx);
    }

    fn stopped(&mut self, _: &mut T::Context) {
        self.session.leave_everything(&self.node);
        self.node.connections.remove(self.session.id);
        self.transport.stopped(&self.control);
        let code = match self.close_code {
            0 if self.control.is_slow() => close::SLOW_CONSUMER,
            0 => NO_CLOSE_CODE,
            code => code,
        };
        self.node.metrics.connection_closed(code);
        tracing::debug!(conn = %self.session.id, transport = T::KIND.as_str(), code, "connection closed");
    }
}

impl<T: Transport> Handler<Outbound> for Connection<T> {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut T::Context) {
        self.guarded(ctx, |conn, ctx| match msg {
            Outbound::Frame(frame) => {
                conn.control.took_one();
                conn.send(ctx, frame);
            }
            Outbound::Close { code, reason } => conn.close(ctx, code, reason),
            Outbound::Crash => panic!("fault injection: connection {}", conn.session.id),
        });
    }
}
