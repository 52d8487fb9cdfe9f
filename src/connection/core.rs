//! The connection core: what a connection is, whatever carries it.
//! [`Connection<T>`] owns the [`Session`] (identity, rooms, presence), the
//! rate limit and the close bookkeeping, decodes and answers client frames,
//! and writes through its [`Outbox`]. The transport `T` says how frames look
//! on the wire; [`super::task`] drives a connection from its socket.
//!
//! Frames from one client are handled strictly in order: a frame that needs
//! an answer from another actor (join, presence, status) parks a
//! continuation in [`Connection::pending`], and the connection reads nothing
//! more until it has run, so a `publish` sent right after a `join` always
//! finds the room joined.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::auth::Identity;
use crate::connection::rate::{self, RateLimiter, RateRule};
use crate::connection::session::{JoinRefusal, Session};
use crate::connection::clock;
use crate::delivery::{ConnId, ConnMsg, Member, Outbox};
use crate::ids::{RoomName, UserId};
use crate::metrics::{ActorKind, Fault, JoinRefusal as Refused, Source, NO_CLOSE_CODE};
use crate::rooms::{JoinError, Since};
use crate::supervisor::{Actor, Failure};
use super::services::{OpenSlot, Services};
use crate::protocol::{self, close, ClientFrame, ClientKind, Encoded, ErrorCode, Request, ServerFrame};
use crate::connection::Transport;

/// What a connection does once an answer it waits for has come.
type Continuation<T> = Box<dyn FnOnce(&mut Connection<T>)>;

/// An answer a connection waits for before it reads on.
pub(crate) type Pending<T> = Pin<Box<dyn Future<Output = Continuation<T>>>>;

/// How the opening request authenticated.
pub(crate) enum Handshake {
    /// No token on the request.
    None,
    Valid(Identity),
    /// A token was present and is bad.
    Invalid,
}

/// A connection is an actor: its messages from outside ([`ConnMsg`]) wait in
/// its outbox, which is also the handle rooms, presence and the cluster link
/// deliver through, and its worker's loop hands them to it (see
/// [`super::task`]).
impl<T: Transport> Actor for Connection<T> {
    type Msg = ConnMsg;
    const KIND: ActorKind = ActorKind::Connection;

    fn handle(&mut self, msg: ConnMsg) -> Result<(), Failure> {
        match msg {
            ConnMsg::Close { code, reason } => self.close(code, reason),
            ConnMsg::Crash => panic!("fault injection: connection {}", self.session.id),
        }
        Ok(())
    }
}

impl<T: Transport> Drop for Connection<T> {
    fn drop(&mut self) {
        self.services.release_slot(T::KIND);
    }
}

/// One client connection, carried by transport `T`.
pub(crate) struct Connection<T: Transport> {
    services: Arc<Services>,
    session: Session,
    outbox: Outbox,
    rate: RateLimiter,
    /// Consecutive rate-limited frames.
    strikes: u32,
    /// The code the connection is closing with (0: not closing).
    close_code: u16,
    /// When the client was last heard from, on the [`clock`].
    heard_ms: u32,
    /// When the next heartbeat is due (0: none, the connection is closing).
    next_ping_ms: u32,
    /// When an unauthenticated connection times out (0: none).
    auth_deadline_ms: u32,
    /// An answer the connection waits for before it reads on.
    pub(crate) pending: Option<Pending<T>>,
    /// What only the transport keeps.
    pub transport: T,
}

impl<T: Transport> Connection<T> {
    /// A connection that keeps `slot` (given back when it drops) and writes
    /// through `outbox`; `id` is from [`crate::node::Node::next_conn`]. Call
    /// [`Self::open`] next.
    pub(crate) fn new(services: Arc<Services>, id: ConnId, slot: OpenSlot, outbox: Outbox, transport: T) -> Self {
        slot.keep();
        Self {
            services,
            session: Session::new(id),
            outbox,
            rate: RateLimiter::default(),
            strikes: 0,
            close_code: 0,
            heard_ms: clock::now(),
            next_ping_ms: 0,
            auth_deadline_ms: 0,
            pending: None,
            transport,
        }
    }

    pub(crate) fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the connection is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.close_code != 0
    }

    /// Registers the connection, authenticates it as its request did, sends
    /// `welcome` and arms its timers.
    pub(crate) fn open(&mut self, handshake: Handshake) {
        self.services.metrics.connection_accepted(T::KIND);
        self.services.connections.insert(self.session.id, self.outbox.clone());
        tracing::debug!(conn = %self.session.id, transport = T::KIND.as_str(), "connection opened");
        let now = clock::now();
        self.next_ping_ms = clock::deadline(now, self.services.config.heartbeat.interval_ms);
        if !T::AUTH_AT_OPEN {
            self.auth_deadline_ms = clock::deadline(now, self.services.config.auth.timeout_ms);
            return T::opened(self);
        }
        match handshake {
            Handshake::Invalid => return self.close(close::INVALID_TOKEN, close::INVALID_TOKEN_REASON),
            Handshake::Valid(identity) => {
                self.session.authenticate(&self.services, identity, false, self.outbox.clone());
            }
            Handshake::None if self.services.config.auth.required => {
                self.auth_deadline_ms = clock::deadline(now, self.services.config.auth.timeout_ms);
            }
            Handshake::None => {
                let identity = Identity::anonymous(&self.services.conn_label(self.session.id));
                self.session.authenticate(&self.services, identity, true, self.outbox.clone());
            }
        }
        self.welcome();
        T::opened(self);
    }

    /// Waits for `answer` before reading on, then runs `then` with it.
    pub(crate) fn wait<R: 'static>(
        &mut self,
        answer: impl Future<Output = R> + 'static,
        then: impl FnOnce(&mut Self, R) + 'static,
    ) {
        self.pending = Some(Box::pin(async move {
            let result = answer.await;
            Box::new(move |conn: &mut Self| then(conn, result)) as Continuation<T>
        }));
    }

    fn send(&mut self, frame: Encoded) {
        self.outbox.deliver(&frame, &self.services.metrics);
    }

    fn reply(&mut self, frame: ServerFrame<'_>) {
        self.send(frame.encode());
    }

    pub(crate) fn error(&mut self, code: ErrorCode, message: &str, id: Option<&RawValue>) {
        self.reply(ServerFrame::Error { code, message, id });
    }

    /// Ends the connection with `code` and `reason`: the transport's close is
    /// written past the queue's bounds, and the connection reads nothing
    /// more. The first close is the one counted: by code, and by fault when
    /// the client caused it.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        if self.close_code != 0 {
            return;
        }
        self.close_code = code;
        let fault = match code {
            close::POLICY => Some(Fault::RateLimit),
            close::TOO_BIG => Some(Fault::Size),
            close::AUTH_TIMEOUT | close::INVALID_TOKEN | close::NOT_AUTHENTICATED => Some(Fault::Auth),
            // Slow consumers are counted when they are found, and heartbeat
            // timeouts where they are found (`run_timers`).
            _ => None,
        };
        if let Some(fault) = fault {
            self.services.metrics.connection_dropped(fault);
        }
        tracing::debug!(conn = %self.session.id, code, reason, "closing connection");
        self.pending = None;
        self.auth_deadline_ms = 0;
        self.next_ping_ms = 0;
        self.outbox.write(self.transport.close_bytes(code, reason), true);
    }

    /// Records the close code the client sent, and answers it.
    pub(crate) fn closed_by_client(&mut self, code: u16) {
        if self.close_code == 0 {
            self.close_code = code;
            self.outbox.write(self.transport.close_bytes(code, ""), true);
        }
    }

    /// Records that the connection ends without a close of its own (the
    /// socket broke, or the peer went away).
    pub(crate) fn lost(&mut self) {
        if self.close_code == 0 {
            self.close_code = if self.outbox.is_slow() { close::SLOW_CONSUMER } else { NO_CLOSE_CODE };
        }
    }

    /// Leaves every room and presence and counts the close: the connection has ended.
    pub(crate) fn finish(&mut self) {
        T::ended(self);
        self.session.leave_everything(&self.services);
        self.services.connections.remove(self.session.id);
        self.outbox.release();
        let code = match self.close_code {
            0 => NO_CLOSE_CODE,
            code => code,
        };
        self.services.metrics.connection_closed(code);
        tracing::debug!(conn = %self.session.id, transport = T::KIND.as_str(), code, "connection closed");
    }

    /// Records that the client was heard from (anything it sent counts).
    pub(crate) fn heard(&mut self, now: u32) {
        self.heard_ms = now;
    }

    /// Runs the connection's timers that have come at `now`: the
    /// authentication deadline (close 4001), the heartbeat timeout (close
    /// 1000), and the next heartbeat.
    pub(crate) fn run_timers(&mut self, now: u32) {
        if self.auth_deadline_ms != 0 && clock::reached(now, self.auth_deadline_ms) {
            self.close(close::AUTH_TIMEOUT, close::AUTH_TIMEOUT_REASON);
        }
        // A connection with no heartbeat due is closing.
        if self.next_ping_ms == 0 {
            return;
        }
        if self.silent_until().is_some_and(|until| clock::reached(now, until)) {
            self.services.metrics.connection_dropped(Fault::Heartbeat);
            return self.close(close::NORMAL, close::HEARTBEAT_REASON);
        }
        if clock::reached(now, self.next_ping_ms) {
            self.next_ping_ms = clock::deadline(now, self.services.config.heartbeat.interval_ms);
            // A queue full of frames of `drop` and `latest` rooms is no
            // reason to close: the ping waits for the next interval, and a
            // client that sends nothing still meets `heartbeat.timeout_ms`.
            let _ = self.outbox.write(self.transport.heartbeat(), false);
        }
    }

    /// When the next of the connection's timers is due (`None`: no timer).
    pub(crate) fn next_timer(&self) -> Option<u32> {
        if self.next_ping_ms == 0 {
            return None;
        }
        let mut next = self.next_ping_ms;
        if let Some(until) = self.silent_until() {
            next = clock::earlier(next, until);
        }
        if self.auth_deadline_ms != 0 {
            next = clock::earlier(next, self.auth_deadline_ms);
        }
        Some(next)
    }

    /// When a client that says nothing more is given up, where the
    /// transport can hear it (a WebSocket answers pings; an SSE subscriber
    /// sends nothing).
    fn silent_until(&self) -> Option<u32> {
        T::KIND.is_duplex().then(|| clock::after(self.heard_ms, self.services.config.heartbeat.timeout_ms))
    }

    fn welcome(&mut self) {
        let conn = self.services.conn_label(self.session.id);
        let user = self.session.user().cloned();
        let node = self.services.id.clone();
        let heartbeat_ms = self.services.config.heartbeat.interval_ms;
        self.reply(ServerFrame::Welcome { conn: &conn, user: user.as_deref(), node: &node, heartbeat_ms });
    }

    /// Takes a token from the connection's bucket; past `rate_strikes`
    /// refusals in a row the connection closes with 1008. `id` is echoed in
    /// the `RATE_LIMITED` error; `answer` is false for frames that get no
    /// error (control frames).
    pub(crate) fn admit(&mut self, id: Option<&RawValue>, answer: bool) -> bool {
        let limits = &self.services.config.limits;
        if self.rate.allow(RateRule::new(limits.rate_per_sec, limits.rate_burst), rate::now_us()) {
            self.strikes = 0;
            return true;
        }
        self.services.metrics.frames_dropped(Fault::RateLimit, 1);
        self.strikes += 1;
        if self.strikes >= limits.rate_strikes {
            self.close(close::POLICY, close::POLICY_REASON);
        } else if answer {
            self.error(ErrorCode::RateLimited, "too many frames, slow down", id);
        }
        false
    }

    /// Handles one client text message.
    pub(crate) fn on_text(&mut self, text: &str) {
        self.on_request(protocol::decode(text), text.len());
    }

    /// Handles one decoded client frame of `len` bytes.
    pub(crate) fn on_request(&mut self, decoded: Result<Request<'_>, protocol::Rejection<'_>>, len: usize) {
        let kind = decoded.as_ref().map_or(ClientKind::Invalid, |r| r.frame.kind());
        self.services.metrics.frame_in(kind, T::KIND, len);
        let id = match &decoded {
            Ok(request) => request.id,
            Err(rejection) => rejection.id,
        };
        if !self.admit(id, true) {
            return;
        }
        match decoded {
            Ok(Request { id, frame: ClientFrame::Auth { token } }) => self.on_auth(token.as_deref(), id),
            _ if self.session.identity().is_none() => self.close(close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON),
            Err(rejection) => self.send(rejection.encode()),
            Ok(request) => self.dispatch(request),
        }
    }

    /// Handles a client message the protocol does not carry (a binary message of `len` bytes).
    pub(crate) fn on_unsupported(&mut self, len: usize) {
        self.refuse_binary(len, "binary frames are not supported", None);
    }

    /// Refuses a binary message of `len` bytes with `message` (echoing `id`).
    pub(crate) fn refuse_binary(&mut self, len: usize, message: &str, id: Option<&RawValue>) {
        self.services.metrics.frame_in(ClientKind::Invalid, T::KIND, len);
        if !self.admit(id, true) {
            return;
        }
        if self.session.identity().is_none() {
            return self.close(close::NOT_AUTHENTICATED, close::NOT_AUTHENTICATED_REASON);
        }
        self.error(ErrorCode::BadRequest, message, id);
    }

    /// Signs the connection in as `identity`, or anonymously (`None`): for
    /// a transport that authenticates after it opens. An anonymous
    /// connection may become a user; a user may refresh its own claims
    /// (leaving the rooms they no longer allow); `Err` for another user.
    pub(crate) fn sign_in(&mut self, identity: Option<Identity>) -> Result<(), &'static str> {
        self.auth_deadline_ms = 0;
        let outbox = self.outbox.clone();
        match identity {
            None if self.session.identity().is_some() => {}
            None => {
                let identity = Identity::anonymous(&self.services.conn_label(self.session.id));
                self.session.authenticate(&self.services, identity, true, outbox);
            }
            Some(identity) if self.session.user() == Some(&identity.user) => {
                self.session.refresh(&self.services, identity);
            }
            Some(_) if self.session.identity().is_some() && !self.session.is_anonymous() => {
                return Err("this connection is already signed in as another user");
            }
            Some(identity) => {
                self.session.authenticate(&self.services, identity, false, outbox);
            }
        }
        Ok(())
    }

    /// Leaves each of `rooms` it is in.
    pub(crate) fn leave_rooms(&mut self, rooms: &[RoomName]) {
        for room in rooms {
            self.session.leave(&self.services, room);
        }
    }

    /// Whether the connection has signed in.
    pub(crate) fn is_signed_in(&self) -> bool {
        self.session.identity().is_some()
    }

    fn dispatch(&mut self, Request { id, frame }: Request<'_>) {
        let Some(user) = self.session.user().cloned() else { return };
        let conn = self.session.id;
        match frame {
            ClientFrame::Auth { .. } => unreachable!("auth frames are handled before dispatch"),
            ClientFrame::Join { room, since, epoch } => {
                let since = since.map(|seq| Since { seq, epoch: epoch.map(|e| e.into()) });
                self.on_join(room.into(), since, id)
            }
            ClientFrame::Leave { room } => {
                if self.session.leave(&self.services, &room) {
                    T::rooms_changed(self);
                }
                self.reply(ServerFrame::Left { room: &room, id });
            }
            ClientFrame::Publish { room, data, echo } => match self.session.room(&room) {
                _ if !self.client_publish(&room) => {
                    self.error(ErrorCode::Forbidden, "clients may not publish in this room's namespace", id)
                }
                Some(handle) => {
                    self.services.metrics.published(Source::Client);
                    handle.publish(conn, user, data, echo, id);
                }
                None => self.error(ErrorCode::NotInRoom, "publish to a room this connection has not joined", id),
            },
            ClientFrame::Typing { room, typing } => match self.session.room(&room) {
                _ if !self.client_publish(&room) => {
                    self.error(ErrorCode::Forbidden, "clients may not send typing in this room's namespace", id)
                }
                Some(handle) => {
                    handle.typing(conn, user, typing);
                    if id.is_some() {
                        self.reply(ServerFrame::Ack { seq: None, id });
                    }
                }
                None => self.error(ErrorCode::NotInRoom, "typing in a room this connection has not joined", id),
            },
            ClientFrame::Direct { to, data } => {
                let to = UserId::from(to);
                let frame = ServerFrame::Direct { from: &user, data, ts: protocol::now_ms() }.encode();
                self.services.cluster.direct(&to, frame.text());
                self.services.presence.direct(to, frame);
                if id.is_some() {
                    self.reply(ServerFrame::Ack { seq: None, id });
                }
            }
            ClientFrame::Presence { room } => self.on_presence(room.into(), id),
            ClientFrame::Status { users } => {
                let id = id.map(ToOwned::to_owned);
                self.wait(self.services.presence.status(users), move |conn, result| match result {
                    Ok(online) => conn.reply(ServerFrame::Status { online: &online, id: id.as_deref() }),
                    Err(_) => conn.error(ErrorCode::Internal, "presence is unavailable", id.as_deref()),
                });
            }
            ClientFrame::Ping => self.reply(ServerFrame::Pong { id }),
        }
    }

    fn on_auth(&mut self, token: Option<&str>, id: Option<&RawValue>) {
        let identity = match token.map(|t| self.services.auth.verify(t)) {
            Some(Ok(identity)) => identity,
            Some(Err(error)) => {
                tracing::debug!(conn = %self.session.id, %error, "auth frame refused");
                return self.close(close::INVALID_TOKEN, close::INVALID_TOKEN_REASON);
            }
            None => return self.close(close::INVALID_TOKEN, close::INVALID_TOKEN_REASON),
        };
        let same_user = self.session.user() == Some(&identity.user);
        let left = if same_user {
            self.session.refresh(&self.services, identity.clone())
        } else if self.session.identity().is_some() && !self.session.is_anonymous() {
            return self.error(ErrorCode::BadRequest, "this connection is already authenticated as another user", id);
        } else {
            self.auth_deadline_ms = 0;
            self.session.authenticate(&self.services, identity.clone(), false, self.outbox.clone())
        };
        // The rooms it is no longer in, each told before the reply.
        for room in &left {
            self.reply(ServerFrame::Left { room, id: None });
        }
        self.reply(ServerFrame::Authed { user: &identity.user, id });
    }

    fn on_join(&mut self, room: RoomName, since: Option<Since>, id: Option<&RawValue>) {
        let refusal = match self.session.check_join(&room, self.services.config.limits.max_rooms_per_conn) {
            Err(JoinRefusal::Forbidden) => Some((Refused::Forbidden, ErrorCode::Forbidden, "this user may not join that room")),
            Err(JoinRefusal::TooManyRooms) => {
                Some((Refused::MaxRoomsPerConn, ErrorCode::TooManyRooms, "this connection is in too many rooms"))
            }
            Ok(()) => None,
        };
        if let Some((reason, code, message)) = refusal {
            self.services.metrics.join_refused(reason);
            return self.error(code, message, id);
        }
        let Some(user) = self.session.user().cloned() else { return };
        let id = id.map(ToOwned::to_owned);
        let is_new = self.session.joining(&room);
        let member = Member { conn: self.session.id, user, outbox: self.outbox.clone() };
        // The room writes `joined` itself, ahead of anything else it sends.
        let join = self.services.rooms.join(room.clone(), member, id.clone(), since);
        self.wait(join, move |conn, result| match result {
            Ok((handle, _)) => {
                conn.session.joined(&room, handle);
                if is_new {
                    T::rooms_changed(conn);
                }
            }
            Err(JoinError::RoomsFull) => {
                if is_new {
                    conn.session.join_refused(&room);
                }
                conn.error(ErrorCode::TooManyRooms, "this server holds too many rooms", id.as_deref())
            }
            Err(JoinError::Unavailable(error)) => {
                tracing::warn!(%room, %error, "join failed");
                if is_new {
                    conn.session.join_unanswered(&conn.services, &room);
                }
                conn.error(ErrorCode::Internal, "the room is unavailable, try again", id.as_deref())
            }
        });
    }

    /// Joins every room of `rooms` at once (already checked against the
    /// session's permissions and limits), then runs `then` with whether all
    /// of them landed (those that failed are forgotten; the others stay
    /// joined), and whether every one asked to recover did. Each room may
    /// come with the position to recover it from.
    pub(crate) fn join_all(
        &mut self,
        rooms: Vec<(RoomName, Option<Since>)>,
        then: impl FnOnce(&mut Self, bool, bool) + 'static,
    ) {
        let Some(user) = self.session.user().cloned() else { return then(self, false, false) };
        let joins: Vec<_> = rooms
            .into_iter()
            .map(|(room, since)| {
                self.session.joining(&room);
                let member = Member { conn: self.session.id, user: user.clone(), outbox: self.outbox.clone() };
                let join = self.services.rooms.join_since(room.clone(), member, None, since);
                async move { (room, join.await) }
            })
            .collect();
        self.wait(futures_util::future::join_all(joins), move |conn, results| {
            let (mut all, mut recovered) = (true, true);
            for (room, result) in results {
                match result {
                    Ok((handle, _, joined)) => {
                        recovered &= joined != Some(false);
                        conn.session.joined(&room, handle)
                    }
                    Err(error) => {
                        tracing::warn!(%room, %error, "join failed");
                        conn.session.join_unanswered(&conn.services, &room);
                        all = false;
                    }
                }
            }
            then(conn, all, all && recovered)
        });
    }

    /// Whether clients may publish and send `typing` in `room`: as its
    /// namespace says, which a joined room carries and any other room is
    /// looked up for (a `publish` there is refused either way, and its
    /// namespace answers first: not even a member may).
    fn client_publish(&self, room: &str) -> bool {
        match self.session.room(room) {
            Some(handle) => handle.client_publish(),
            None => self.services.rooms.namespaces().resolve(room).client_publish,
        }
    }

    fn on_presence(&mut self, room: RoomName, id: Option<&RawValue>) {
        if !self.session.identity().is_some_and(|i| i.may_join(&room)) {
            return self.error(ErrorCode::Forbidden, "this user may not see that room", id);
        }
        let id = id.map(ToOwned::to_owned);
        self.wait(self.services.room_presence(room.clone()), move |conn, result| match result {
            Ok(users) => {
                conn.reply(ServerFrame::Presence { room: &room, count: users.len(), users: &users, id: id.as_deref() })
            }
            Err(_) => conn.error(ErrorCode::Internal, "presence is unavailable", id.as_deref()),
        });
    }
}
