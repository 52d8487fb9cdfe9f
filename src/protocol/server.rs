//! Server frames: each serialised once, as the whole WebSocket frame every
//! recipient is sent.

use super::*;

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
        users: &'a UserList,
        /// Distinct users in the room: `users.len()`, kept beside the list.
        count: usize,
        /// The room's latest `seq` (0 before its first message).
        seq: u64,
        epoch: &'a str,
        /// Only for a join with `since`: whether the messages after it follow.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    /// The event an SSE stream gets for a room it resumes and cannot
    /// recover: the client reloads it by other means.
    #[serde(rename = "joined")]
    Unrecovered { room: &'a str, recovered: bool, seq: u64, epoch: &'a str },
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
        users: &'a UserList,
        /// Distinct users in the room: `users.len()`, kept beside the list.
        count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Id<'a>,
    },
    Status {
        online: &'a BTreeMap<UserId, bool>,
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

/// A room's users as `joined` and `presence` list them (each once, sorted),
/// encoded as their JSON array once and shared, a reference count per
/// reply: a room builds one per change of its member set, and every reply
/// until the next change serialises no user name again.
#[derive(Debug, Clone)]
pub struct UserList(Arc<Listed>);

/// What a [`UserList`] shares: one pointer in the room that keeps it.
#[derive(Debug)]
struct Listed {
    json: Box<RawValue>,
    count: usize,
}

impl UserList {
    /// The list of `users`, given each once and sorted.
    pub fn new<'u>(users: impl IntoIterator<Item = &'u UserId>) -> Self {
        let users: Vec<&str> = users.into_iter().map(|user| &**user).collect();
        // A list of strings always serialises.
        let json = serde_json::value::to_raw_value(&users).expect("a list of strings serialises");
        Self(Arc::new(Listed { json, count: users.len() }))
    }

    /// No users.
    pub fn empty() -> Self {
        Self::new([])
    }

    /// `count` users, none of them named (`[]`): a room that does not list
    /// its users.
    pub fn unlisted(count: usize) -> Self {
        Self(Arc::new(Listed { json: RawValue::from_string("[]".into()).expect("[] is JSON"), count }))
    }

    /// How many users it stands for: those it lists, or its count.
    pub fn len(&self) -> usize {
        self.0.count
    }

    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// The list as its JSON array.
    pub fn json(&self) -> &RawValue {
        &self.0.json
    }

    /// Whether `self` and `other` are the one list (not a copy).
    pub fn shares(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The users, read back (for tests).
    #[doc(hidden)]
    pub fn names(&self) -> Vec<String> {
        serde_json::from_str(self.0.json.get()).unwrap_or_default()
    }
}

impl Serialize for UserList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(serializer)
    }
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
pub(crate) const WS_HEADER_MAX: usize = 10;

/// The text in `buffer[WS_HEADER_MAX..]` as one WebSocket text message,
/// its header written into the bytes reserved before it.
pub(crate) fn ws_text(buffer: Vec<u8>) -> Bytes {
    Encoded::framed(ServerKind::Message, buffer).wire
}

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

    /// A `message` frame's room and `seq`, read back from its text: the room
    /// is its second field, and `seq` the one before the last (`ts`), so
    /// neither can be confused with anything in `data`.
    pub fn message_position(&self) -> Option<(&str, u64)> {
        if self.kind != ServerKind::Message {
            return None;
        }
        let text = self.text();
        let room = text.strip_prefix(r#"{"type":"message","room":""#)?;
        let room = &room[..room.find('"')?];
        let at = text.rfind(r#","seq":"#)? + r#","seq":"#.len();
        let digits = &text[at..];
        let seq = digits[..digits.find(',')?].parse().ok()?;
        Some((room, seq))
    }

    /// A `message` frame's `seq`.
    pub fn message_seq(&self) -> Option<u64> {
        self.message_position().map(|(_, seq)| seq)
    }
}

impl ServerFrame<'_> {
    pub(crate) fn kind(&self) -> ServerKind {
        match self {
            Self::Welcome { .. } => ServerKind::Welcome,
            Self::Authed { .. } => ServerKind::Authed,
            Self::Joined { .. } | Self::Unrecovered { .. } => ServerKind::Joined,
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

    /// About how long the JSON of a `message` is (never less, unless its
    /// user id needs escapes): its buffer is allocated once, with little
    /// slack, which matters for a frame that rooms keep in their history.
    /// Other frames start small and grow.
    fn expected_len(&self) -> usize {
        // `{"type":"message","room":"","from":"","data":,"seq":,"ts":}`, and
        // the longest `seq` and `ts`.
        const FIXED: usize = 59 + 20 + 13;
        match self {
            Self::Message { room, from, data, .. } => FIXED + room.len() + from.len() + data.get().len(),
            _ => 0,
        }
    }

    pub fn encode(&self) -> Encoded {
        // Serialising these types cannot fail: every map key is a string and
        // raw values were valid JSON when they were received.
        let mut buffer = Vec::with_capacity(WS_HEADER_MAX + self.expected_len());
        buffer.resize(WS_HEADER_MAX, 0);
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
