//! Socket.IO compatibility: Engine.IO 4 and Socket.IO 5 at `/socket.io/`,
//! so clients built on the official `socket.io-client` reach Herald's rooms
//! without a change beyond their URL.
//!
//! A Socket.IO session is a connection like any other (`Connection<Sio>`):
//! same rooms, `seq`, presence, limits, slow-consumer policies and cluster;
//! only its frames look different on the wire ([`crate::protocol::socketio`]). It reaches the
//! server over a WebSocket (`transport=websocket`: the socket is the
//! connection's, as `/ws`'s is) or by HTTP long polling ([`polling`]: the
//! connection has no socket; its packets wait in its outbox for the
//! client's next `GET`, and its client's `POST`s are handed to it through
//! its [`Link`]), and a
//! polling session can move onto a WebSocket (the upgrade: `2probe`,
//! `3probe`, `5`).
//!
//! - **Opening.** The Engine.IO open packet carries the session's `sid`,
//!   `upgrades`, `pingInterval` (`heartbeat.interval_ms`), `pingTimeout`
//!   (`heartbeat.timeout_ms` less the interval: a client that hears no ping
//!   for the two together gives up, as the server gives up on a client it
//!   does not hear from for `heartbeat.timeout_ms`) and `maxPayload`
//!   (`limits.max_message_bytes`).
//! - **Signing in.** The namespace `/` CONNECT: its `auth.token`, else the
//!   opening request's `Authorization` header, else its `?token=`. A bad
//!   or missing token is a CONNECT_ERROR (`invalid token`,
//!   `not authenticated`), never a silent close; a session that does not
//!   connect within `auth.timeout_ms` is closed. Other namespaces are
//!   refused (`Invalid namespace`).
//! - **Events.** Client events are Herald's client frames (see
//!   [`crate::protocol::decode_event`]); an acknowledgement id becomes the
//!   frame's `id`, so the reply (or the error) comes back as the ACK.
//!   Binary events are refused with `BAD_REQUEST`, their attachments
//!   dropped.
//! - **Recovery.** The CONNECT reply carries a `pid`, and every `message`
//!   the session's position in each of its rooms as its offset. When the
//!   connection ends (other than by the client's own DISCONNECT), the
//!   session's rooms and where each join placed it are kept for
//!   `socketio.recovery_ms`: by the node, or with clustering in Redis,
//!   where the record is also rewritten at each join and leave so that a
//!   node's death does not lose it. A client that reconnects with `pid`
//!   and `offset` is put back in those rooms from Herald's history, as a
//!   `join` with `since` would be (from the offset's position, or the
//!   join's for a room it got no message of); when every room recovered,
//!   the reply repeats the `pid` and `socket.recovered` is true. A client
//!   back while its old connection is still open here recovers from that
//!   connection, which is closed.

pub(crate) mod polling;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::connection::core::{Connection, Handshake};
use crate::connection::Transport;
use crate::ids::RoomName;
use crate::metrics::TransportKind;
use crate::protocol::{self, close, framing::parse_stream_id, ErrorCode, ServerKind};
use crate::rooms::Since;
use crate::transport::ws::{self, OverWs, Ws};
use crate::connection::socketio::Record;
use crate::delivery::polling::Link;
use crate::protocol::socketio::{self as packet, Engine, Kind};

/// A Socket.IO connection.
type SioConnection = Connection<Sio>;

/// How long a live session's record is kept in Redis from its last join
/// or leave: its node, should it die, cannot shorten it to
/// `socketio.recovery_ms` as it ends.
const LIVE_RECORD: Duration = Duration::from_secs(24 * 3600);

/// What a binary event is answered with.
const BINARY_REFUSED: &str = "binary payloads are not supported over Socket.IO: send JSON";

/// What a Socket.IO connection keeps beyond the core.
pub(crate) struct Sio {
    ws: Ws,
    /// The namespace `/` is connected.
    connected: bool,
    /// The session long-polls (as its outbox does).
    polling: bool,
    /// Binary attachments of a refused packet still to come, dropped.
    skip: u32,
    /// The session's `pid` once connected (0: none).
    pid: u64,
    /// The client ended the session itself: there is nothing to recover.
    forget: bool,
    /// The record of the session being recovered, until its rooms are
    /// back: kept again if the connection ends first.
    recovering: Option<Box<Record>>,
    more: Option<Box<More>>,
}

/// What a session holds only for a while: until it connects, while it polls.
#[derive(Default)]
struct More {
    /// How the opening request authenticated, until the CONNECT.
    handshake: Option<Handshake>,
    /// The Engine.IO session id (the open packet's `sid`).
    sid: Option<Arc<str>>,
    /// While the session polls: how its polls reach it.
    link: Option<Arc<Link>>,
    /// A WebSocket the polling session is trying, until its `5`.
    probe: Option<RawFd>,
}

impl Sio {
    /// A session over a WebSocket whose request authenticated as `handshake`.
    pub(crate) fn over_ws(handshake: Handshake) -> Self {
        Self::with(More { handshake: Some(handshake), sid: Some(new_sid()), ..More::default() }, false)
    }

    /// A long-polling session reached through `link`.
    pub(crate) fn polling(handshake: Handshake, link: Arc<Link>) -> Self {
        let sid = link.sid.clone();
        Self::with(More { handshake: Some(handshake), sid: Some(sid), link: Some(link), probe: None }, true)
    }

    fn with(more: More, polling: bool) -> Self {
        Self {
            ws: Ws::default(),
            connected: false,
            polling,
            forget: false,
            skip: 0,
            pid: 0,
            recovering: None,
            more: Some(Box::new(more)),
        }
    }

    /// The WebSocket a polling session is trying, until its `5`.
    fn probe(&self) -> Option<RawFd> {
        self.more.as_ref().and_then(|m| m.probe).filter(|_| self.polling)
    }

    /// Drops what only the opening needed once the session no longer polls.
    fn settle(&mut self) {
        if self.more.as_ref().is_some_and(|m| m.link.is_none() && m.probe.is_none() && m.handshake.is_none()) {
            self.more = None;
        }
    }
}

/// A new Engine.IO session id: 120 random bits.
pub(crate) fn new_sid() -> Arc<str> {
    let bits: [u8; 15] = rand::random();
    data_encoding::BASE64URL_NOPAD.encode(&bits).into()
}

impl Transport for Sio {
    const KIND: TransportKind = TransportKind::SocketIo;
    const AUTH_AT_OPEN: bool = false;

    fn carries(kind: ServerKind) -> bool {
        kind != ServerKind::Welcome
    }

    /// Over a WebSocket, the WebSocket's close (the client reconnects, and
    /// recovers); over polling, Engine.IO's close packet.
    fn close_bytes(&self, code: u16, reason: &str) -> Bytes {
        if self.polling {
            Bytes::from_static(packet::CLOSE)
        } else {
            self.ws.close_bytes(code, reason)
        }
    }

    fn heartbeat(&self) -> Bytes {
        packet::framed(packet::PING, !self.polling)
    }

    /// Sends the open packet.
    fn opened(conn: &mut SioConnection) {
        let config = &conn.services().config;
        let interval = config.heartbeat.interval_ms;
        let timeout = config.heartbeat.timeout_ms.saturating_sub(interval).max(1);
        let max_payload = config.limits.max_message_bytes;
        let sid = conn.transport.more.as_ref().and_then(|m| m.sid.clone()).unwrap_or_else(new_sid);
        let open = packet::open(&sid, conn.transport.polling, interval, timeout, max_payload);
        conn.outbox().write_packet(&open, true);
    }

    fn on_input(conn: &mut SioConnection, input: &mut [u8]) -> usize {
        match conn.transport.probe() {
            Some(fd) => read_probe(conn, fd, input),
            None => ws::read(conn, input),
        }
    }

    /// With clustering, the session's record follows its rooms in Redis,
    /// so that a node's death does not take it along.
    fn rooms_changed(conn: &mut SioConnection) {
        let pid = conn.transport.pid;
        if pid == 0 || !conn.services().cluster.is_clustered() {
            return;
        }
        if let Some(record) = record(conn) {
            conn.services().cluster.keep_session(pid, record.to_text(), LIVE_RECORD);
        }
    }

    /// Keeps the session's rooms for its client to recover (in Redis, with
    /// clustering), and lets its polls go.
    fn ended(conn: &mut SioConnection) {
        if let Some(link) = conn.transport.more.as_ref().and_then(|m| m.link.clone()) {
            link.end();
            conn.services().socketio.remove_link(&link.sid);
        }
        let pid = conn.transport.pid;
        if pid == 0 {
            return;
        }
        let services = conn.services().clone();
        let keep = Duration::from_millis(services.config.socketio.recovery_ms);
        // A session still being recovered keeps the record it came back
        // with, unless what it missed did not fit its queue: the next try
        // would end the same way, so the client starts afresh.
        let record = match conn.transport.recovering.take() {
            Some(_) if conn.outbox().is_slow() => None,
            Some(recovering) => Some(*recovering),
            None => record(conn),
        };
        let record = record.filter(|_| !conn.transport.forget);
        if !services.cluster.is_clustered() {
            services.socketio.end(pid, conn.outbox(), record, keep.as_millis() as u64);
            return;
        }
        if !services.socketio.end(pid, conn.outbox(), None, 0) {
            // Its client is already back on another connection.
            return;
        }
        match record {
            Some(record) => services.cluster.keep_session(pid, record.to_text(), keep),
            // Nothing to recover: what Redis holds lapses at once.
            None => services.cluster.keep_session(pid, String::new(), Duration::from_millis(1)),
        }
    }

    fn service(conn: &mut SioConnection) -> Option<(std::net::TcpStream, Vec<u8>)> {
        let link = conn.transport.more.as_ref()?.link.clone()?;
        if link.heard() {
            conn.heard(crate::connection::clock::now());
        }
        while conn.pending.is_none() && !conn.is_closing() {
            let Some(packet) = link.next_packet() else { break };
            on_packet(conn, &packet);
        }
        link.answer();
        let (stream, early) = link.take_upgrade()?;
        if !conn.transport.polling {
            return None;
        }
        use std::os::fd::AsRawFd;
        if let Some(more) = conn.transport.more.as_mut() {
            more.probe = Some(stream.as_raw_fd());
        }
        Some((stream, early))
    }

    /// A WebSocket tried for an upgrade closed before its `5`: the session
    /// polls on.
    fn socket_lost(conn: &mut SioConnection) -> bool {
        let Some(more) = conn.transport.more.as_mut() else { return false };
        if more.probe.take().is_none() || !conn.transport.polling {
            return false;
        }
        if let Some(link) = &more.link {
            link.set_probing(false);
        }
        true
    }
}

impl OverWs for Sio {
    fn ws(&mut self) -> &mut Ws {
        &mut self.ws
    }

    fn on_message(conn: &mut SioConnection, text: &str) {
        on_packet(conn, text)
    }

    /// An attachment of a binary packet (already refused), or a binary
    /// message on its own.
    fn on_binary(conn: &mut SioConnection, payload: &[u8]) {
        on_attachment(conn, payload.len());
    }
}

fn on_attachment(conn: &mut SioConnection, len: usize) {
    if conn.transport.skip > 0 {
        conn.transport.skip -= 1;
        return;
    }
    conn.refuse_binary(len, BINARY_REFUSED, None);
}

/// Handles one Engine.IO packet from the client.
fn on_packet(conn: &mut SioConnection, text: &str) {
    match packet::engine(text) {
        Engine::Message(data) => on_socket_packet(conn, data),
        Engine::Pong | Engine::Noop => {}
        Engine::Ping("probe") => on_probe(conn),
        Engine::Ping(_) => {}
        Engine::Upgrade => on_upgrade(conn),
        // The transport closed (as Socket.IO counts it, recoverable). A
        // polling client is gone: no poll will take a close packet.
        Engine::Close => {
            conn.close(close::NORMAL, "client closed");
            if conn.transport.polling {
                let _ = conn.outbox().take_polled();
            }
        }
        Engine::Binary => on_attachment(conn, text.len()),
        Engine::Unknown => refuse(conn, "not an Engine.IO packet", None, text.len()),
    }
}

/// Reads the WebSocket a polling session tries: `2probe`, then `5`, and
/// pings. Anything else (a close, a binary or another message, a protocol
/// error) gives it up, not the session: its socket is shut, and the
/// session polls on (see [`Sio::socket_lost`]). After `5` the rest is the
/// session's own WebSocket's.
fn read_probe(conn: &mut SioConnection, fd: RawFd, input: &mut [u8]) -> usize {
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;
    let give_up = || {
        // SAFETY: `fd` is the tried socket, open while the session holds it.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    };
    let mut at = 0;
    while at < input.len() && conn.transport.probe().is_some() && conn.pending.is_none() {
        let rest = &mut input[at..];
        let mut cursor = std::io::Cursor::new(&*rest);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return at,
            Err(_) => {
                give_up();
                return input.len();
            }
        };
        let start = cursor.position() as usize;
        let end = start + len as usize;
        let Some(mask) = header.mask.filter(|_| len <= 125 && header.is_final) else {
            give_up();
            return input.len();
        };
        if rest.len() < end {
            return at;
        }
        let payload = &mut rest[start..end];
        ws::unmask(payload, mask);
        at += end;
        match (header.opcode, &*payload) {
            (OpCode::Data(Data::Text), b"2probe") => on_probe(conn),
            (OpCode::Data(Data::Text), b"5") => on_upgrade(conn),
            (OpCode::Control(Control::Ping), payload) => polling::send_now(fd, &ws::pong(payload)),
            (OpCode::Control(Control::Pong), _) => {}
            _ => {
                give_up();
                return input.len();
            }
        }
    }
    if conn.transport.probe().is_none() && !conn.transport.polling {
        return at + ws::read(conn, &mut input[at..]);
    }
    at
}

/// `2probe` on the WebSocket a polling session tries: answered on that
/// socket at once, and the poll under way is ended so that the client
/// can pause polling and send `5`.
fn on_probe(conn: &mut SioConnection) {
    let Some(more) = conn.transport.more.as_ref() else { return };
    let (Some(fd), Some(link)) = (more.probe, more.link.clone()) else { return };
    polling::send_now(fd, &packet::framed(packet::PROBE, true));
    link.set_probing(true);
    link.answer();
}

/// `5` on the tried WebSocket: the session moves onto it.
fn on_upgrade(conn: &mut SioConnection) {
    let Some(more) = conn.transport.more.as_mut() else { return };
    let (Some(fd), Some(link)) = (more.probe.take(), more.link.take()) else { return };
    conn.transport.polling = false;
    link.upgraded(fd);
    conn.services().socketio.remove_link(&link.sid);
    conn.transport.settle();
}

/// Handles one Socket.IO packet.
fn on_socket_packet(conn: &mut SioConnection, text: &str) {
    let Some(packet) = packet::socket(text) else {
        return refuse(conn, "not a Socket.IO packet", None, text.len());
    };
    if packet.namespace != "/" {
        // Answered, so counted against the rate limit as any frame.
        if packet.kind == Kind::Connect && conn.admit(None, true) {
            conn.outbox().write_packet(&packet::connect_error(packet.namespace, "Invalid namespace"), false);
        }
        return;
    }
    match packet.kind {
        // A CONNECT costs a token check: it takes a rate-limit token too.
        Kind::Connect if conn.admit(None, true) => on_connect(conn, packet.data),
        Kind::Connect => {}
        Kind::Disconnect => {
            // The client's own: nothing to recover.
            conn.transport.forget = true;
            conn.close(close::NORMAL, "client disconnect");
        }
        Kind::Event if conn.transport.connected => on_event(conn, packet.ack, packet.data),
        Kind::BinaryEvent | Kind::BinaryAck => {
            conn.transport.skip = packet.attachments;
            if packet.kind == Kind::BinaryEvent && conn.transport.connected {
                let id = packet.ack.map(ack_id);
                conn.refuse_binary(text.len(), BINARY_REFUSED, id.as_deref());
            }
        }
        // Events before the namespace is connected, acks (the server asks
        // for none) and CONNECT_ERRORs are not the client's to send.
        Kind::Event | Kind::Ack | Kind::ConnectError => {}
    }
}

/// An acknowledgement id as a frame's `id`.
fn ack_id(ack: u64) -> Box<RawValue> {
    RawValue::from_string(ack.to_string()).expect("an integer is JSON")
}

fn on_event(conn: &mut SioConnection, ack: Option<u64>, data: &str) {
    let id = ack.map(ack_id);
    match packet::event(data) {
        Some((name, arg)) => {
            let decoded = protocol::decode_event(&name, arg, id.as_deref());
            conn.on_request(decoded, data.len());
        }
        None => refuse(conn, "an event is an array that starts with its name", id.as_deref(), data.len()),
    }
}

/// Answers a packet that cannot be read with `BAD_REQUEST`, counted and
/// rate-limited as any client frame.
fn refuse(conn: &mut SioConnection, message: &'static str, id: Option<&RawValue>, len: usize) {
    let rejection = protocol::Rejection { id, code: ErrorCode::BadRequest, message: message.into() };
    conn.on_request(Err(rejection), len);
}

/// What a CONNECT may carry: the client's `auth`, and what socket.io-client
/// adds to recover.
#[derive(Deserialize, Default)]
struct ConnectData<'a> {
    #[serde(default, borrow, deserialize_with = "protocol::present")]
    token: Option<&'a RawValue>,
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    offset: Option<String>,
}

/// The namespace `/` CONNECT: signs the session in, and recovers it when
/// it comes back with its `pid`.
fn on_connect(conn: &mut SioConnection, data: &str) {
    if conn.transport.connected {
        // Connected already: the same answer, and nothing more.
        let sid = conn.services().conn_label(conn.session().id);
        let reply = packet::connected(&sid, &format!("{:016x}", conn.transport.pid));
        conn.outbox().write_packet(&reply, false);
        return;
    }
    let connect: ConnectData<'_> = match data.trim() {
        "" => ConnectData::default(),
        json => match serde_json::from_str(json) {
            Ok(connect) => connect,
            Err(_) => return connect_error(conn, "invalid auth payload: send an object such as {\"token\": \"<jwt>\"}"),
        },
    };
    let handshake = conn.transport.more.as_mut().and_then(|m| m.handshake.take());
    let identity = match connect.token {
        Some(raw) => match protocol::string(raw).map(|token| conn.services().auth.verify(&token)) {
            Some(Ok(identity)) => Some(identity),
            _ => return connect_error(conn, close::INVALID_TOKEN_REASON),
        },
        None => match handshake {
            Some(Handshake::Valid(identity)) => Some(identity),
            Some(Handshake::Invalid) => return connect_error(conn, close::INVALID_TOKEN_REASON),
            _ if conn.services().config.auth.required && !conn.is_signed_in() => {
                return connect_error(conn, close::NOT_AUTHENTICATED_REASON)
            }
            _ => None,
        },
    };
    if let Err(message) = conn.sign_in(identity) {
        return connect_error(conn, message);
    }
    conn.transport.connected = true;
    conn.transport.settle();
    let pid = connect.pid.as_deref().and_then(|pid| u64::from_str_radix(pid, 16).ok()).filter(|&pid| pid != 0);
    match pid {
        Some(pid) => recover(conn, pid, connect.offset.as_deref()),
        None => connected(conn, new_pid(), false),
    }
}

fn connect_error(conn: &mut SioConnection, message: &str) {
    conn.outbox().write_packet(&packet::connect_error("/", message), false);
}

fn new_pid() -> u64 {
    rand::random::<u64>().max(1)
}

/// Writes the CONNECT reply for `pid`, ahead of anything held while the
/// session's rooms were recovered (`corked`).
fn connected(conn: &mut SioConnection, pid: u64, corked: bool) {
    conn.transport.pid = pid;
    if let Some(user) = conn.session().user().cloned() {
        conn.services().socketio.connected(pid, user, conn.outbox().clone());
    }
    let sid = conn.services().conn_label(conn.session().id);
    let reply = packet::connected(&sid, &format!("{pid:016x}"));
    if corked {
        conn.outbox().uncork(Some(packet::framed(&reply, !conn.transport.polling)));
    } else {
        conn.outbox().write_packet(&reply, false);
    }
}

/// Finds the record of a session that came back with `pid` (in Redis,
/// with clustering: it may have been on another node), then rejoins it.
fn recover(conn: &mut SioConnection, pid: u64, offset: Option<&str>) {
    let user = conn.session().user().cloned();
    if let Some(record) = user.and_then(|user| conn.services().socketio.take_live(pid, &user, conn.outbox())) {
        return rejoin(conn, pid, offset, Some(record));
    }
    let offset = offset.map(str::to_owned);
    match conn.services().cluster.take_session(pid) {
        Some(take) => conn.wait(take, move |conn, taken| {
            let record = taken.ok().flatten().as_deref().and_then(Record::parse);
            rejoin(conn, pid, offset.as_deref(), record)
        }),
        None => {
            let record = conn.services().socketio.take(pid);
            rejoin(conn, pid, offset.as_deref(), record)
        }
    }
}

/// Puts a session that came back with `pid` (and the `offset` of the last
/// message it got) back in the rooms of its `record`, replaying what it
/// missed, and answers the CONNECT: with the same `pid` when every room
/// recovered. Otherwise (no record, another user's, a room no longer
/// allowed or not recovered) the session starts afresh, in no room, as
/// Socket.IO's own do.
fn rejoin(conn: &mut SioConnection, pid: u64, offset: Option<&str>, record: Option<Record>) {
    let Some(record) = record.filter(|record| Some(&record.user) == conn.session().user()) else {
        return fresh(conn, pid);
    };
    let positions = match offset.map(parse_stream_id) {
        Some(None) => return fresh(conn, pid),
        Some(Some(positions)) => positions,
        None => Vec::new(),
    };
    let rooms: Vec<(RoomName, Option<Since>)> = record
        .rooms
        .iter()
        .map(|(room, epoch, seq)| {
            // The offset's position, for a room the client had a message of since.
            let since = match positions.iter().find(|p| p.room == **room) {
                Some(p) => Since { seq: p.seq, epoch: Some(p.epoch.as_str().into()) },
                None => Since { seq: *seq, epoch: Some((**epoch).into()) },
            };
            (room.clone(), Some(since))
        })
        .collect();
    let max_rooms = conn.services().config.limits.max_rooms_per_conn;
    if rooms.iter().any(|(room, _)| conn.session().check_join(room, max_rooms).is_err()) {
        return fresh(conn, pid);
    }
    let names: Vec<RoomName> = rooms.iter().map(|(room, _)| room.clone()).collect();
    conn.transport.pid = pid;
    conn.transport.recovering = Some(Box::new(record));
    conn.outbox().cork();
    conn.join_all(rooms, move |conn, joined, recovered| {
        conn.transport.recovering = None;
        if joined && recovered {
            connected(conn, pid, true);
            return Sio::rooms_changed(conn);
        }
        // A new session, in no room: what the rooms that did recover
        // replayed is not for it.
        conn.leave_rooms(&names);
        conn.outbox().discard_held();
        conn.services().socketio.end(pid, conn.outbox(), None, 0);
        connected(conn, new_pid(), true);
    });
}

/// Answers a CONNECT that came back with `pid` as a new session: the old
/// pid is no longer this connection's.
fn fresh(conn: &mut SioConnection, pid: u64) {
    conn.services().socketio.end(pid, conn.outbox(), None, 0);
    connected(conn, new_pid(), false);
}

/// The session's rooms as a record: each with where its join placed it.
fn record(conn: &SioConnection) -> Option<Record> {
    let user = conn.session().user()?.clone();
    let mut rooms = conn.outbox().joined_positions();
    rooms.retain(|(room, _, _)| conn.session().is_member(room));
    Some(Record { user, rooms })
}


