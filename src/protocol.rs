//! The wire protocol (`PROTOCOL.md`, v1): every client frame, server frame,
//! error code and close code, in one place.
//!
//! Decoding borrows from the received text: fields are first split out as raw
//! JSON slices, then each is checked on its own so every failure names its
//! field. `data` is never parsed into a tree: its raw text goes into the
//! outgoing `message` frame as is, so a publish costs one scan of the payload.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// Longest room name in bytes.
pub const MAX_ROOM_LEN: usize = 128;
/// Deepest nesting of arrays and objects accepted inside `data`: `[[1]]` is 2.
///
/// serde_json's own limit (128 levels, counting the frame's object) does not
/// apply here: `data` is captured as raw text, which serde_json skips over
/// without a depth limit and never parses into a tree, so this is the one
/// bound, checked by [`nests_deeper_than`] without recursion.
pub const MAX_DATA_DEPTH: usize = 128;
/// What a `data` deeper than [`MAX_DATA_DEPTH`] is refused with.
pub const DATA_TOO_DEEP: &str = "data nests deeper than 128 levels";
/// Most user ids one `status` frame may ask about.
pub const MAX_STATUS_USERS: usize = 1000;
/// Longest user id accepted in `direct.to` and `status.users`.
pub const MAX_USER_LEN: usize = 256;

/// The error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidJson,
    BadRequest,
    UnknownType,
    NotInRoom,
    Forbidden,
    RateLimited,
    TooManyRooms,
    Internal,
}

/// WebSocket close codes Herald sends, with their reasons.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Not a code on the wire: what a close frame without a code stands for.
    pub const NO_STATUS: u16 = 1005;
    /// A text message that is not UTF-8.
    pub const INVALID_UTF8: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const AUTH_TIMEOUT: u16 = 4001;
    pub const INVALID_TOKEN: u16 = 4002;
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;

    pub const AUTH_TIMEOUT_REASON: &str = "authentication timeout";
    pub const INVALID_TOKEN_REASON: &str = "invalid token";
    pub const NOT_AUTHENTICATED_REASON: &str = "not authenticated";
    pub const GOING_AWAY_REASON: &str = "server shutting down";
    pub const POLICY_REASON: &str = "rate limit exceeded";
    pub const TOO_BIG_REASON: &str = "message too big";
    pub const INTERNAL_REASON: &str = "internal error";
    pub const SLOW_CONSUMER_REASON: &str = "slow consumer";
    pub const HEARTBEAT_REASON: &str = "heartbeat timeout";

    /// The reason Herald gives with a close it asks for by `code` alone
    /// (a heartbeat timeout is the one 1000 the server sends unasked).
    pub fn reason(code: u16) -> &'static str {
        match code {
            NORMAL => HEARTBEAT_REASON,
            GOING_AWAY => GOING_AWAY_REASON,
            POLICY => POLICY_REASON,
            TOO_BIG => TOO_BIG_REASON,
            INTERNAL => INTERNAL_REASON,
            AUTH_TIMEOUT => AUTH_TIMEOUT_REASON,
            INVALID_TOKEN => INVALID_TOKEN_REASON,
            NOT_AUTHENTICATED => NOT_AUTHENTICATED_REASON,
            SLOW_CONSUMER => SLOW_CONSUMER_REASON,
            _ => "",
        }
    }
}

/// Whether `name` is a valid room name: 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A decoded client frame. Borrowed fields point into the received text.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `token` is `None` when missing or not a string: a bad token either way.
    Auth { token: Option<Cow<'a, str>> },
    Join { room: Cow<'a, str> },
    Leave { room: Cow<'a, str> },
    Publish { room: Cow<'a, str>, data: &'a RawValue, echo: bool },
    Direct { to: Cow<'a, str>, data: &'a RawValue },
    Typing { room: Cow<'a, str>, typing: bool },
    Presence { room: Cow<'a, str> },
    Status { users: Vec<String> },
    Ping,
}

/// A client frame with its optional `id` (validated: a JSON string or integer).
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<&'a RawValue>,
    pub frame: ClientFrame<'a>,
}

/// Why a frame was refused; `id` is echoed in the `error` frame when it was valid.
#[derive(Debug)]
pub struct Rejection<'a> {
    pub id: Option<&'a RawValue>,
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

/// The client frame types, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Auth,
    Join,
    Leave,
    Publish,
    Direct,
    Typing,
    Presence,
    Status,
    Ping,
    /// A frame that could not be decoded to one of the above.
    Invalid,
}

impl ClientKind {
    pub const ALL: [ClientKind; 10] = [
        Self::Auth,
        Self::Join,
        Self::Leave,
        Self::Publish,
        Self::Direct,
        Self::Typing,
        Self::Presence,
        Self::Status,
        Self::Ping,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Publish => "publish",
            Self::Direct => "direct",
            Self::Typing => "typing",
            Self::Presence => "presence",
            Self::Status => "status",
            Self::Ping => "ping",
            Self::Invalid => "invalid",
        }
    }
}

impl ClientFrame<'_> {
    pub fn kind(&self) -> ClientKind {
        match self {
            Self::Auth { .. } => ClientKind::Auth,
            Self::Join { .. } => ClientKind::Join,
            Self::Leave { .. } => ClientKind::Leave,
            Self::Publish { .. } => ClientKind::Publish,
            Self::Direct { .. } => ClientKind::Direct,
            Self::Typing { .. } => ClientKind::Typing,
            Self::Presence { .. } => ClientKind::Presence,
            Self::Status { .. } => ClientKind::Status,
            Self::Ping => ClientKind::Ping,
        }
    }
}

/// Every field any client frame may carry, as raw JSON. A present `null` is
/// `Some("null")`, so "missing" and "null" stay apart (`data` may be null).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    echo: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    typing: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    users: Option<&'a RawValue>,
}

/// Deserialises a field that is present (even as `null`) as `Some(raw)`.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON string's value, borrowed when it has no escapes.
pub(crate) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// Whether `user` is an acceptable user id: 1 to [`MAX_USER_LEN`] bytes.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_LEN
}

/// A user id: a string of 1 to [`MAX_USER_LEN`] bytes.
fn user_id(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    raw.and_then(string).filter(|user| valid_user(user))
}

fn boolean(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn valid_id(raw: &RawValue) -> bool {
    let text = raw.get();
    text.starts_with('"') || text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
}

/// Whether arrays and objects in `json` nest deeper than `max`.
pub fn nests_deeper_than(json: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes one text frame. Field checks come before any state check, so a bad
/// room name is `BAD_REQUEST` whatever the connection has joined.
pub fn decode(text: &str) -> Result<Request<'_>, Rejection<'_>> {
    let reject = |id, code, message: &'static str| Rejection { id, code, message: Cow::Borrowed(message) };
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => reject(None, ErrorCode::BadRequest, "a frame must be a JSON object"),
            Err(_) => reject(None, ErrorCode::InvalidJson, "the frame is not valid JSON"),
        });
    }
    let fields: Fields<'_> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) if e.is_data() => {
            return Err(reject(None, ErrorCode::BadRequest, "the frame repeats a field"));
        }
        Err(_) => return Err(reject(None, ErrorCode::InvalidJson, "the frame is not valid JSON")),
    };
    let id = match fields.id {
        Some(raw) if !valid_id(raw) => {
            return Err(reject(None, ErrorCode::BadRequest, "id must be a string or an integer"));
        }
        id => id,
    };
    let bad = |message: &'static str| reject(id, ErrorCode::BadRequest, message);
    let Some(ty) = fields.ty.and_then(string) else {
        return Err(bad("type must be a string"));
    };
    let room = || match fields.room.and_then(string) {
        Some(room) if valid_room(&room) => Ok(room),
        _ => Err(bad("room must be 1 to 128 bytes of [A-Za-z0-9_.:-]")),
    };
    let data = || match fields.data {
        Some(data) if nests_deeper_than(data.get(), MAX_DATA_DEPTH) => Err(bad(DATA_TOO_DEEP)),
        Some(data) => Ok(data),
        None => Err(bad("data is required (it may be null)")),
    };
    let frame = match &*ty {
        "auth" => ClientFrame::Auth { token: fields.token.and_then(string) },
        "join" => ClientFrame::Join { room: room()? },
        "leave" => ClientFrame::Leave { room: room()? },
        "publish" => {
            let room = room()?;
            let data = data()?;
            let echo = match fields.echo {
                None => true,
                Some(raw) => boolean(raw).ok_or_else(|| bad("echo must be a boolean"))?,
            };
            ClientFrame::Publish { room, data, echo }
        }
        "direct" => {
            let to = user_id(fields.to).ok_or_else(|| bad("to must be a user id (1 to 256 bytes)"))?;
            ClientFrame::Direct { to, data: data()? }
        }
        "typing" => {
            let room = room()?;
            let typing =
                fields.typing.and_then(boolean).ok_or_else(|| bad("typing must be a boolean"))?;
            ClientFrame::Typing { room, typing }
        }
        "presence" => ClientFrame::Presence { room: room()? },
        "status" => {
            let users = fields
                .users
                .and_then(|raw| serde_json::from_str::<Vec<String>>(raw.get()).ok())
                .filter(|users| users.len() <= MAX_STATUS_USERS)
                .ok_or_else(|| bad("users must be a list of at most 1000 user ids"))?;
            ClientFrame::Status { users }
        }
        "ping" => ClientFrame::Ping,
        _ => return Err(reject(id, ErrorCode::UnknownType, "unknown frame type")),
    };
    Ok(Request { id, frame })
}

/// The server frame types, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Welcome,
    Authed,
    Joined,
    Left,
    Ack,
    Presence,
    Status,
    Pong,
    Message,
    Direct,
    Broadcast,
    UserJoined,
    UserLeft,
    Typing,
    Error,
}

impl ServerKind {
    pub const ALL: [ServerKind; 15] = [
        Self::Welcome,
        Self::Authed,
        Self::Joined,
        Self::Left,
        Self::Ack,
        Self::Presence,
        Self::Status,
        Self::Pong,
        Self::Message,
        Self::Direct,
        Self::Broadcast,
        Self::UserJoined,
        Self::UserLeft,
        Self::Typing,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Authed => "authed",
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Ack => "ack",
            Self::Presence => "presence",
            Self::Status => "status",
            Self::Pong => "pong",
            Self::Message => "message",
            Self::Direct => "direct",
            Self::Broadcast => "broadcast",
            Self::UserJoined => "user_joined",
            Self::UserLeft => "user_left",
            Self::Typing => "typing",
            Self::Error => "error",
        }
    }
}

type Id<'a> = Option<&'a RawValue>;

/// A server frame. Serialised once; the bytes are shared by every recipient.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome { conn: &'a str, user: Option<&'a str>, node: &'a str, heartbeat_ms: u64 },
    Authed {
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Joined {
        room: &'a str,
        users: &'a [std::sync::Arc<str>],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Left {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Presence {
        room: &'a str,
        users: &'a [std::sync::Arc<str>],
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Status {
        online: &'a BTreeMap<String, bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Message { room: &'a str, from: &'a str, data: &'a RawValue, seq: u64, ts: u64 },
    Direct { from: &'a str, data: &'a RawValue, ts: u64 },
    Broadcast { data: &'a RawValue, ts: u64 },
    UserJoined { room: &'a str, user: &'a str },
    UserLeft { room: &'a str, user: &'a str },
    Typing { room: &'a str, user: &'a str, typing: bool },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
}

/// A serialised server frame, cheap to clone (a reference count). It is kept
/// as the whole WebSocket text frame (header and payload): server frames are
/// unmasked, so every member of a room is sent these very bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub kind: ServerKind,
    /// The WebSocket frame: a 2, 4 or 10-byte header, then the JSON text.
    wire: Bytes,
}

/// The longest WebSocket header of an unmasked server frame.
const WS_HEADER_MAX: usize = 10;

impl Encoded {
    /// `text` framed as one WebSocket text message.
    pub fn new(kind: ServerKind, text: &str) -> Self {
        let mut out = Vec::with_capacity(WS_HEADER_MAX + text.len());
        out.resize(WS_HEADER_MAX, 0);
        out.extend_from_slice(text.as_bytes());
        Self::framed(kind, out)
    }

    /// Frames the JSON in `buffer[WS_HEADER_MAX..]`, writing its header into
    /// the reserved bytes just before it.
    fn framed(kind: ServerKind, buffer: Vec<u8>) -> Self {
        let len = buffer.len() - WS_HEADER_MAX;
        let mut header = [0u8; WS_HEADER_MAX];
        header[0] = 0x81;
        let used = match len {
            0..=125 => {
                header[1] = len as u8;
                2
            }
            126..=65535 => {
                header[1] = 126;
                header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                header[1] = 127;
                header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        let start = WS_HEADER_MAX - used;
        let mut buffer = buffer;
        buffer[start..WS_HEADER_MAX].copy_from_slice(&header[..used]);
        Self { kind, wire: Bytes::from(buffer).slice(start..) }
    }

    /// The frame's JSON text.
    pub fn text(&self) -> &str {
        let start = match self.wire[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        // SAFETY: `wire` after its header is the JSON text it was built from,
        // which was a `str`.
        unsafe { std::str::from_utf8_unchecked(&self.wire[start..]) }
    }

    /// The whole WebSocket frame, ready for the socket.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
}

impl ServerFrame<'_> {
    pub fn kind(&self) -> ServerKind {
        match self {
            Self::Welcome { .. } => ServerKind::Welcome,
            Self::Authed { .. } => ServerKind::Authed,
            Self::Joined { .. } => ServerKind::Joined,
            Self::Left { .. } => ServerKind::Left,
            Self::Ack { .. } => ServerKind::Ack,
            Self::Presence { .. } => ServerKind::Presence,
            Self::Status { .. } => ServerKind::Status,
            Self::Pong { .. } => ServerKind::Pong,
            Self::Message { .. } => ServerKind::Message,
            Self::Direct { .. } => ServerKind::Direct,
            Self::Broadcast { .. } => ServerKind::Broadcast,
            Self::UserJoined { .. } => ServerKind::UserJoined,
            Self::UserLeft { .. } => ServerKind::UserLeft,
            Self::Typing { .. } => ServerKind::Typing,
            Self::Error { .. } => ServerKind::Error,
        }
    }

    pub fn encode(&self) -> Encoded {
        // Serialising these types cannot fail: every map key is a string and
        // raw values were valid JSON when they were received.
        let mut buffer = vec![0u8; WS_HEADER_MAX];
        if serde_json::to_writer(&mut buffer, self).is_err() {
            buffer.truncate(WS_HEADER_MAX);
            buffer.extend_from_slice(b"{}");
        }
        // The buffer grew by doubling; a frame can wait in up to
        // `outbound_queue` slots per member, so it keeps only its own bytes.
        if buffer.capacity() - buffer.len() > 1024 {
            buffer.shrink_to_fit();
        }
        Encoded::framed(self.kind(), buffer)
    }
}

impl Rejection<'_> {
    pub fn encode(&self) -> Encoded {
        ServerFrame::Error { code: self.code, message: &self.message, id: self.id }.encode()
    }
}

/// Milliseconds since the Unix epoch, for `ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().code
    }

    #[test]
    fn decodes_every_client_frame() {
        let kinds: Vec<_> = [
            r#"{"type":"auth","token":"t"}"#,
            r#"{"type":"join","room":"a"}"#,
            r#"{"type":"leave","room":"a"}"#,
            r#"{"type":"publish","room":"a","data":null}"#,
            r#"{"type":"direct","to":"bob","data":{"x":1}}"#,
            r#"{"type":"typing","room":"a","typing":true}"#,
            r#"{"type":"presence","room":"a"}"#,
            r#"{"type":"status","users":["a","b"]}"#,
            r#"{"type":"ping","extra":[1,2]}"#,
        ]
        .iter()
        .map(|t| decode(t).unwrap().frame.kind())
        .collect();
        assert_eq!(kinds, &ClientKind::ALL[..9]);
    }

    #[test]
    fn publish_keeps_data_verbatim_and_echo_defaults_to_true() {
        let req = decode(r#"{"type":"publish","room":"r","data": {"a" : [1, 2]},"id":7}"#).unwrap();
        assert_eq!(req.id.unwrap().get(), "7");
        match req.frame {
            ClientFrame::Publish { data, echo, .. } => {
                assert_eq!(data.get(), r#"{"a" : [1, 2]}"#);
                assert!(echo);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_get_their_documented_codes() {
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code("42"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"room":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"join","room":"a b"}"#), ErrorCode::BadRequest);
        assert_eq!(code(&format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(129))), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"publish","room":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"publish","room":"a","data":1,"echo":"no"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"typing","room":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"direct","to":3,"data":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"status","users":[1]}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"ping","type":"ping"}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn ids_are_strings_or_integers_and_echoed_on_errors() {
        assert_eq!(decode(r#"{"type":"fly","id":"x"}"#).unwrap_err().id.unwrap().get(), r#""x""#);
        assert_eq!(decode(r#"{"type":"join","id":-3}"#).unwrap_err().id.unwrap().get(), "-3");
        for bad in [r#"1.5"#, "true", "null", "[1]", r#"{"a":1}"#] {
            let text = format!(r#"{{"type":"ping","id":{bad}}}"#);
            let err = decode(&text).unwrap_err();
            assert_eq!((err.code, err.id.is_none()), (ErrorCode::BadRequest, true), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = format!(r#"{{"type":"publish","room":"a","data":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(&deep).is_err());
        let ok = format!(r#"{{"type":"publish","room":"a","data":{}{}}}"#, "[".repeat(60), "]".repeat(60));
        assert!(decode(&ok).is_ok());
        let in_string = format!(r#"{{"type":"publish","room":"a","data":"{}"}}"#, "[".repeat(500));
        assert!(decode(&in_string).is_ok());
    }

    /// `data` nested `depth` levels: arrays and objects in turn, the innermost holding 1.
    fn nested(depth: usize) -> String {
        let open: String = (0..depth).map(|i| if i % 2 == 0 { "[" } else { r#"{"k":"# }).collect();
        let close: String = (0..depth).rev().map(|i| if i % 2 == 0 { "]" } else { "}" }).collect();
        format!("{open}1{close}")
    }

    #[test]
    fn data_nests_up_to_128_levels_inside_the_frame() {
        assert!(DATA_TOO_DEEP.contains(&MAX_DATA_DEPTH.to_string()));
        for ty in ["publish", "direct"] {
            let frame = |depth| format!(r#"{{"type":"{ty}","room":"a","to":"bob","data":{},"id":1}}"#, nested(depth));
            let deepest = frame(128);
            match decode(&deepest) {
                Ok(Request { frame: ClientFrame::Publish { data, .. } | ClientFrame::Direct { data, .. }, .. }) => {
                    assert_eq!(data.get(), nested(128));
                }
                other => panic!("{ty} at 128: {other:?}"),
            }
            let deeper = frame(129);
            let err = decode(&deeper).unwrap_err();
            assert_eq!((err.code, &*err.message, err.id.map(RawValue::get)), (ErrorCode::BadRequest, DATA_TOO_DEEP, Some("1")));
        }
        assert!(!nests_deeper_than(&nested(128), 128));
        assert!(nests_deeper_than(&nested(129), 128));
    }

    #[test]
    fn auth_token_of_wrong_type_decodes_as_missing() {
        match decode(r#"{"type":"auth","token":5}"#).unwrap().frame {
            ClientFrame::Auth { token } => assert!(token.is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_frames_serialise_as_documented() {
        let id = RawValue::from_string("\"q\"".into()).unwrap();
        let ack = ServerFrame::Ack { seq: Some(3), id: Some(&id) }.encode();
        assert_eq!(ack.text(), r#"{"type":"ack","seq":3,"id":"q"}"#);
        let data = RawValue::from_string("[1]".into()).unwrap();
        let msg = ServerFrame::Message { room: "r", from: "u", data: &data, seq: 1, ts: 2 }.encode();
        assert_eq!(msg.text(), r#"{"type":"message","room":"r","from":"u","data":[1],"seq":1,"ts":2}"#);
        let joined = ServerFrame::UserJoined { room: "r", user: "u" }.encode();
        assert_eq!(joined.text(), r#"{"type":"user_joined","room":"r","user":"u"}"#);
        let err = ServerFrame::Error { code: ErrorCode::NotInRoom, message: "m", id: None }.encode();
        assert_eq!(err.text(), r#"{"type":"error","code":"NOT_IN_ROOM","message":"m"}"#);
    }
}
