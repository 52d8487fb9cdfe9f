//! Client frames: decoding a text frame into a request, every field checked
//! on its own so a refusal names the field.

use super::*;

/// A decoded client frame. Borrowed fields point into the received text.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `token` is `None` when missing or not a string: a bad token either way.
    Auth { token: Option<Cow<'a, str>> },
    /// With `since`, the messages after it are asked for (`epoch`: the
    /// numbering `since` is in).
    Join { room: Cow<'a, str>, since: Option<u64>, epoch: Option<Cow<'a, str>> },
    Leave { room: Cow<'a, str> },
    Publish { room: Cow<'a, str>, data: &'a RawValue, echo: bool },
    Direct { to: Cow<'a, str>, data: &'a RawValue },
    Typing { room: Cow<'a, str>, typing: bool },
    Presence { room: Cow<'a, str> },
    Status { users: Vec<UserId> },
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
    pub(crate) fn kind(&self) -> ClientKind {
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
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    epoch: Option<&'a RawValue>,
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
pub(crate) fn nests_deeper_than(json: &str, max: usize) -> bool {
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
    let Some(ty) = fields.ty.and_then(string) else {
        return Err(reject(id, ErrorCode::BadRequest, "type must be a string"));
    };
    decode_fields(&fields, &ty, id)
}

/// Decodes a Socket.IO event: `ty` is its name, `arg` the JSON of its
/// argument (an object with the fields of the frame of that type; its own
/// `type` and `id` are ignored), and `id` the acknowledgement's id, echoed
/// in the reply as a frame's `id` is.
pub fn decode_event<'a>(ty: &str, arg: Option<&'a str>, id: Option<&'a RawValue>) -> Result<Request<'a>, Rejection<'a>> {
    let reject = |code, message: &'static str| Rejection { id, code, message: Cow::Borrowed(message) };
    let arg = arg.unwrap_or("{}");
    if !arg.trim_start().starts_with('{') {
        return Err(reject(ErrorCode::BadRequest, "an event's argument must be an object with the frame's fields"));
    }
    let fields: Fields<'a> = match serde_json::from_str(arg) {
        Ok(fields) => fields,
        Err(e) if e.is_data() => return Err(reject(ErrorCode::BadRequest, "the argument repeats a field")),
        Err(_) => return Err(reject(ErrorCode::InvalidJson, "the argument is not valid JSON")),
    };
    if ty == "auth" {
        // A Socket.IO client authenticates with its CONNECT packet.
        return Err(reject(ErrorCode::UnknownType, "unknown event: send the token in the connection's auth"));
    }
    decode_fields(&fields, ty, id)
}

/// The frame of type `ty` that `fields` make.
fn decode_fields<'a>(fields: &Fields<'a>, ty: &str, id: Option<&'a RawValue>) -> Result<Request<'a>, Rejection<'a>> {
    let reject = |id, code, message: &'static str| Rejection { id, code, message: Cow::Borrowed(message) };
    let bad = |message: &'static str| reject(id, ErrorCode::BadRequest, message);
    let room = || match fields.room.and_then(string) {
        Some(room) if valid_room(&room) => Ok(room),
        _ => Err(bad("room must be 1 to 128 bytes of [A-Za-z0-9_.:-]")),
    };
    let data = || match fields.data {
        Some(data) if nests_deeper_than(data.get(), MAX_DATA_DEPTH) => Err(bad(DATA_TOO_DEEP)),
        Some(data) => Ok(data),
        None => Err(bad("data is required (it may be null)")),
    };
    let frame = match ty {
        "auth" => ClientFrame::Auth { token: fields.token.and_then(string) },
        "join" => {
            let room = room()?;
            let since = match fields.since.map(RawValue::get) {
                None | Some("null") => None,
                Some(text) => Some(text.parse::<u64>().map_err(|_| bad("since must be an integer of 0 or more"))?),
            };
            let epoch = match fields.epoch {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(string(raw).ok_or_else(|| bad("epoch must be a string"))?),
            };
            ClientFrame::Join { room, epoch: epoch.filter(|_| since.is_some()), since }
        }
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
                .and_then(|raw| serde_json::from_str::<Vec<UserId>>(raw.get()).ok())
                .filter(|users| users.len() <= MAX_STATUS_USERS && users.iter().all(|user| valid_user(user)))
                .ok_or_else(|| bad("users must be a list of at most 1000 user ids of 1 to 256 bytes"))?;
            ClientFrame::Status { users }
        }
        "ping" => ClientFrame::Ping,
        _ => return Err(reject(id, ErrorCode::UnknownType, "unknown frame type")),
    };
    Ok(Request { id, frame })
}

impl Rejection<'_> {
    pub(crate) fn encode(&self) -> Encoded {
        ServerFrame::Error { code: self.code, message: &self.message, id: self.id }.encode()
    }
}
