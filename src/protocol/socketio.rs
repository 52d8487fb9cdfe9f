//! Engine.IO 4 and Socket.IO 5 packets, as text: reading what a client
//! sends, and writing Herald's frames as what a Socket.IO client expects.
//!
//! An Engine.IO packet is a type digit and its data: `0` open, `1` close,
//! `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop. Over a WebSocket
//! each message is one packet; over long polling a body holds several,
//! separated by the record separator (`0x1e`). A `4` message carries a
//! Socket.IO packet: a type digit (`0` CONNECT, `1` DISCONNECT, `2` EVENT,
//! `3` ACK, `4` CONNECT_ERROR, `5` BINARY_EVENT, `6` BINARY_ACK), for the
//! binary ones the number of attachments and `-`, then a namespace and `,`
//! unless it is `/`, then an acknowledgement id, then JSON.
//!
//! Herald's frames map onto them so (see PROTOCOL.md):
//! - a frame a room or the server sends (`message`, `direct`, `broadcast`,
//!   `user_joined`, `user_left`, `typing`, and an `error` nobody asked for)
//!   is the EVENT of that name whose argument is the frame, `type`
//!   included: `42["message",{"type":"message",...}]`; a `message` to a
//!   session placed in its rooms carries its offset as a second argument,
//!   which Socket.IO clients keep for recovering the connection;
//! - a reply to a client event with an acknowledgement id `n` (the
//!   connection core echoes it as the frame's `id`, always its last field)
//!   is the ACK `43n[<the frame without id>]`; a reply no acknowledgement
//!   asked for goes nowhere (`welcome` never does).

use bytes::{BufMut, Bytes, BytesMut};

use super::{ws_text, Encoded, ServerKind, WS_HEADER_MAX};

/// The record separator between the packets of a polling body.
pub(crate) const SEPARATOR: u8 = 0x1e;

/// An Engine.IO packet from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Engine<'a> {
    Close,
    /// `2probe` while upgrading (a v4 client sends no other ping).
    Ping(&'a str),
    /// `3`, or `3probe` while upgrading.
    Pong,
    Message(&'a str),
    Upgrade,
    Noop,
    /// A base64 binary message over polling (`b…`): an attachment.
    Binary,
    Unknown,
}

/// Reads one Engine.IO packet.
pub(crate) fn engine(text: &str) -> Engine<'_> {
    let Some(kind) = text.bytes().next() else { return Engine::Unknown };
    // Every packet type is one ASCII digit (or `b`); anything else, a
    // multi-byte character included, is no packet.
    let Some(data) = text.get(1..) else { return Engine::Unknown };
    match kind {
        b'1' => Engine::Close,
        b'2' => Engine::Ping(data),
        b'3' => Engine::Pong,
        b'4' => Engine::Message(data),
        b'5' => Engine::Upgrade,
        b'6' => Engine::Noop,
        b'b' => Engine::Binary,
        _ => Engine::Unknown,
    }
}

/// The Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A Socket.IO packet from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Socket<'a> {
    pub kind: Kind,
    /// The namespace, `/` unless the packet names another.
    pub namespace: &'a str,
    /// Binary attachments that follow (binary packets only).
    pub attachments: u32,
    pub ack: Option<u64>,
    /// The JSON after the header; empty when there is none.
    pub data: &'a str,
}

/// Reads a Socket.IO packet; `None` when its header cannot be read.
pub(crate) fn socket(text: &str) -> Option<Socket<'_>> {
    let bytes = text.as_bytes();
    let kind = match bytes.first()? {
        b'0' => Kind::Connect,
        b'1' => Kind::Disconnect,
        b'2' => Kind::Event,
        b'3' => Kind::Ack,
        b'4' => Kind::ConnectError,
        b'5' => Kind::BinaryEvent,
        b'6' => Kind::BinaryAck,
        _ => return None,
    };
    let mut at = 1;
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let dash = text[at..].find('-')? + at;
        attachments = text[at..dash].parse().ok()?;
        at = dash + 1;
    }
    let mut namespace = "/";
    if bytes.get(at) == Some(&b'/') {
        let end = text[at..].find(',').map_or(text.len(), |comma| comma + at);
        namespace = &text[at..end];
        at = (end + 1).min(text.len());
    }
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    let ack = match digits {
        0 => None,
        // More digits than a u64 holds is a bad header, not a wrapped id.
        _ => Some(text[at..at + digits].parse().ok()?),
    };
    at += digits;
    Some(Socket { kind, namespace, attachments, ack, data: &text[at..] })
}

/// An EVENT's name and first argument (the JSON text of each): `None` when
/// the data is not an array that starts with a string.
pub(crate) fn event(data: &str) -> Option<(String, Option<&str>)> {
    let args: Vec<&serde_json::value::RawValue> = serde_json::from_str(data).ok()?;
    let name: String = serde_json::from_str(args.first()?.get()).ok()?;
    Some((name, args.get(1).map(|arg| arg.get())))
}

/// One Engine.IO packet, framed as a WebSocket message when `ws`.
pub(crate) fn framed(packet: &[u8], ws: bool) -> Bytes {
    if !ws {
        return Bytes::copy_from_slice(packet);
    }
    let mut buffer = Vec::with_capacity(WS_HEADER_MAX + packet.len());
    buffer.resize(WS_HEADER_MAX, 0);
    buffer.extend_from_slice(packet);
    ws_text(buffer)
}

/// A packet queued for a poll, framed for the WebSocket the session
/// upgraded to.
pub(crate) fn reframed(packet: &Bytes) -> Bytes {
    framed(packet, true)
}

/// The body of a poll: `packets`, separated by the record separator.
pub(crate) fn payload(packets: impl Iterator<Item = Bytes>) -> Bytes {
    let mut body = BytesMut::new();
    for packet in packets {
        if !body.is_empty() {
            body.put_u8(SEPARATOR);
        }
        body.put_slice(&packet);
    }
    body.freeze()
}

/// The packets of a poll's body, each its own slice of it.
pub(crate) fn packets(body: &Bytes) -> Vec<Bytes> {
    body.split(|&b| b == SEPARATOR).map(|packet| body.slice_ref(packet)).collect()
}

/// The Engine.IO packet a Socket.IO client is sent for `frame` (see the
/// module's docs), framed as a WebSocket message when `ws`; `None` when it
/// goes to no Socket.IO client.
pub(crate) fn server_packet(frame: &Encoded, offset: Option<&str>, ws: bool) -> Option<Bytes> {
    let text = frame.text();
    let reserve = if ws { WS_HEADER_MAX } else { 0 };
    let mut out = Vec::with_capacity(reserve + text.len() + 24 + offset.map_or(0, str::len));
    out.resize(reserve, 0);
    match frame.kind {
        ServerKind::Welcome => return None,
        ServerKind::Message
        | ServerKind::Direct
        | ServerKind::Broadcast
        | ServerKind::UserJoined
        | ServerKind::UserLeft
        | ServerKind::Typing => {
            // An offset is room names, epochs and numbers: nothing to escape.
            let offset = offset.filter(|o| !o.contains(['"', '\\']) && !o.chars().any(char::is_control));
            push_event(&mut out, frame.kind.as_str(), text, offset);
        }
        ServerKind::Error => match reply_id(text) {
            Some((ack, body)) => push_ack(&mut out, ack, body),
            None => push_event(&mut out, "error", text, None),
        },
        ServerKind::Authed
        | ServerKind::Joined
        | ServerKind::Left
        | ServerKind::Ack
        | ServerKind::Presence
        | ServerKind::Status
        | ServerKind::Pong => {
            let (ack, body) = reply_id(text)?;
            push_ack(&mut out, ack, body);
        }
    }
    Some(if ws { ws_text(out) } else { Bytes::from(out) })
}

fn push_event(out: &mut Vec<u8>, name: &str, frame: &str, offset: Option<&str>) {
    out.extend_from_slice(b"42[\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(frame.as_bytes());
    if let Some(offset) = offset {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(offset.as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

/// `body` is a frame's text up to its `id` field; the ACK carries it closed.
fn push_ack(out: &mut Vec<u8>, ack: u64, body: &str) {
    out.extend_from_slice(b"43");
    out.extend_from_slice(ack.to_string().as_bytes());
    out.push(b'[');
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"}]");
}

/// A reply's acknowledgement id, and its text before `,"id":n}` (without
/// the closing brace). A reply's `id` is its last field, and a Socket.IO
/// session's ids are acknowledgement numbers.
fn reply_id(text: &str) -> Option<(u64, &str)> {
    let body = text.strip_suffix('}')?;
    let at = body.rfind(",\"id\":")?;
    let digits = &body[at + 6..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &body[..at]))
}

/// The open packet: the session's id, whether it may upgrade to a
/// WebSocket, and its heartbeat and size limits.
pub(crate) fn open(sid: &str, upgrade: bool, ping_interval: u64, ping_timeout: u64, max_payload: usize) -> Vec<u8> {
    let upgrades: &[&str] = if upgrade { &["websocket"] } else { &[] };
    let body = serde_json::json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval,
        "pingTimeout": ping_timeout,
        "maxPayload": max_payload,
    });
    format!("0{body}").into_bytes()
}

/// The CONNECT reply of namespace `/`: the socket's id and the session's
/// `pid`, which the client sends back to recover.
pub(crate) fn connected(sid: &str, pid: &str) -> Vec<u8> {
    format!("40{}", serde_json::json!({ "sid": sid, "pid": pid })).into_bytes()
}

/// A CONNECT_ERROR of `namespace` with `message`.
pub(crate) fn connect_error(namespace: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "message": message });
    if namespace == "/" {
        format!("44{body}").into_bytes()
    } else {
        format!("44{namespace},{body}").into_bytes()
    }
}

/// Engine.IO's ping.
pub(crate) const PING: &[u8] = b"2";
/// The answer to an upgrade's probe.
pub(crate) const PROBE: &[u8] = b"3probe";
/// What ends the poll a session upgrading leaves behind.
pub(crate) const NOOP: &[u8] = b"6";
/// Engine.IO's close.
pub(crate) const CLOSE: &[u8] = b"1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerFrame;
    use serde_json::value::RawValue;

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn engine_packets_are_told_apart() {
        assert_eq!(engine("2probe"), Engine::Ping("probe"));
        assert_eq!(engine("3"), Engine::Pong);
        assert_eq!(engine("3probe"), Engine::Pong);
        assert_eq!(engine("42[\"x\"]"), Engine::Message("2[\"x\"]"));
        assert_eq!(engine("5"), Engine::Upgrade);
        assert_eq!(engine("1"), Engine::Close);
        assert_eq!(engine("bAQID"), Engine::Binary);
        assert_eq!(engine(""), Engine::Unknown);
        assert_eq!(engine("9"), Engine::Unknown);
        assert_eq!(engine("é"), Engine::Unknown, "a first byte that starts a wider character");
        assert_eq!(engine("4é"), Engine::Message("é"));
    }

    #[test]
    fn socket_packet_headers_are_read() {
        let connect = socket("0{\"token\":\"t\"}").unwrap();
        assert_eq!((connect.kind, connect.namespace, connect.ack, connect.data), (Kind::Connect, "/", None, "{\"token\":\"t\"}"));
        let event = socket("212[\"join\",{\"room\":\"r\"}]").unwrap();
        assert_eq!((event.kind, event.ack, event.data), (Kind::Event, Some(12), "[\"join\",{\"room\":\"r\"}]"));
        let other = socket("2/admin,3[\"x\"]").unwrap();
        assert_eq!((other.namespace, other.ack, other.data), ("/admin", Some(3), "[\"x\"]"));
        let connect_other = socket("0/admin,").unwrap();
        assert_eq!((connect_other.namespace, connect_other.data), ("/admin", ""));
        let binary = socket("51-7[\"publish\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!((binary.kind, binary.attachments, binary.ack), (Kind::BinaryEvent, 1, Some(7)));
        assert_eq!(socket("1").unwrap().kind, Kind::Disconnect);
        assert!(socket("").is_none());
        assert!(socket("9").is_none());
        assert!(socket("5x-[]").is_none());
        assert!(socket("299999999999999999999999[]").is_none(), "an id past u64 is refused, not wrapped");
        assert!(socket("é").is_none());
        assert!(socket("2é").is_some_and(|p| p.data == "é"));
        assert!(socket("5é-[]").is_none());
        assert!(socket("2/é").is_some_and(|p| p.namespace == "/é"));
    }

    #[test]
    fn events_name_their_first_argument() {
        assert_eq!(event("[\"join\",{\"room\":\"r\"}]"), Some(("join".into(), Some("{\"room\":\"r\"}"))));
        assert_eq!(event("[\"ping\"]"), Some(("ping".into(), None)));
        assert_eq!(event("[\"a\\\"b\",1,2]"), Some(("a\"b".into(), Some("1"))));
        assert_eq!(event("[1]"), None);
        assert_eq!(event("{}"), None);
        assert_eq!(event("[]"), None);
    }

    #[test]
    fn room_frames_are_events_carrying_the_frame() {
        let data = RawValue::from_string("{\"x\":1}".into()).unwrap();
        let frame = ServerFrame::Message { room: "r", from: "u", data: &data, seq: 7, ts: 1 }.encode();
        let packet = server_packet(&frame, Some("r,e,7"), false).unwrap();
        assert_eq!(text(&packet), format!("42[\"message\",{},\"r,e,7\"]", frame.text()));
        let typing = ServerFrame::Typing { room: "r", user: "u", typing: true }.encode();
        assert_eq!(text(&server_packet(&typing, None, false).unwrap()), format!("42[\"typing\",{}]", typing.text()));
        let ws = server_packet(&frame, None, true).unwrap();
        assert_eq!(crate::protocol::framing::payload_text(&ws), format!("42[\"message\",{}]", frame.text()));
    }

    #[test]
    fn replies_are_acks_without_their_id_and_unasked_ones_go_nowhere() {
        let id = RawValue::from_string("12".into()).unwrap();
        let ack = ServerFrame::Ack { seq: Some(7), id: Some(&id) }.encode();
        assert_eq!(text(&server_packet(&ack, None, false).unwrap()), "4312[{\"type\":\"ack\",\"seq\":7}]");
        let pong = ServerFrame::Pong { id: Some(&id) }.encode();
        assert_eq!(text(&server_packet(&pong, None, false).unwrap()), "4312[{\"type\":\"pong\"}]");
        assert!(server_packet(&ServerFrame::Pong { id: None }.encode(), None, false).is_none());
        assert!(server_packet(&ServerFrame::Left { room: "r", id: None }.encode(), None, false).is_none());
        let welcome = ServerFrame::Welcome { conn: "c", user: None, node: "n", heartbeat_ms: 1 }.encode();
        assert!(server_packet(&welcome, None, false).is_none());
    }

    #[test]
    fn errors_go_to_their_ack_or_else_as_an_error_event() {
        use crate::protocol::ErrorCode;
        let id = RawValue::from_string("3".into()).unwrap();
        let acked = ServerFrame::Error { code: ErrorCode::NotInRoom, message: "no", id: Some(&id) }.encode();
        assert_eq!(
            text(&server_packet(&acked, None, false).unwrap()),
            "433[{\"type\":\"error\",\"code\":\"NOT_IN_ROOM\",\"message\":\"no\"}]"
        );
        let plain = ServerFrame::Error { code: ErrorCode::BadRequest, message: "no", id: None }.encode();
        assert_eq!(text(&server_packet(&plain, None, false).unwrap()), format!("42[\"error\",{}]", plain.text()));
    }

    #[test]
    fn a_poll_body_separates_its_packets() {
        let body = payload([Bytes::from_static(b"2"), Bytes::from_static(b"42[\"x\"]")].into_iter());
        assert_eq!(&body[..], b"2\x1e42[\"x\"]");
        assert_eq!(packets(&body), [Bytes::from_static(b"2"), Bytes::from_static(b"42[\"x\"]")]);
        assert_eq!(crate::protocol::framing::payload_text(&reframed(&Bytes::from_static(b"6"))), "6");
    }

    #[test]
    fn the_handshake_packets_say_what_socket_io_clients_read() {
        let open: serde_json::Value = serde_json::from_slice(&open("s1", true, 25000, 20000, 65536)[1..]).unwrap();
        assert_eq!(open["sid"], "s1");
        assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
        assert_eq!((open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()), (Some(25000), Some(20000)));
        assert_eq!(open["maxPayload"], 65536);
        assert_eq!(connected("c1", "p1"), b"40{\"pid\":\"p1\",\"sid\":\"c1\"}".to_vec());
        assert_eq!(connect_error("/", "invalid token"), b"44{\"message\":\"invalid token\"}".to_vec());
        assert_eq!(connect_error("/x", "Invalid namespace"), b"44/x,{\"message\":\"Invalid namespace\"}".to_vec());
    }
}
