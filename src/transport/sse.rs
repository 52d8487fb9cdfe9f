//! The Server-Sent Events transport (`GET /sse?rooms=a,b`): a read-only
//! subscription for clients that cannot hold a WebSocket (`EventSource` in a
//! browser, `curl -N` in a shell).
//!
//! The request is checked in full before anything is sent (see
//! [`super::handshake`]): the node takes it, its token is good (or none is
//! needed: 401 otherwise), every room name is valid (400) and one the user
//! may join (403). The connection then opens, comes online in presence and
//! joins its rooms; its outbox is corked meanwhile, and only when every join
//! has landed does the response head go out, followed by whatever rooms
//! delivered during the joins. So a message published after the client sees
//! the headers reaches it.
//!
//! The response body is chunked; each `message`, `direct` and `broadcast`
//! frame is one chunk holding one event, `data: <frame as JSON>`, and a
//! `: ping` comment goes out at the heartbeat interval. A subscriber is a
//! connection like a WebSocket one: same outbox, same bounds, same slow
//! consumer rule, and it ends when its client's socket does.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::connection::Transport;
use crate::metrics::TransportKind;
use crate::connection::core::Connection;
use crate::ids::RoomName;
use crate::protocol::framing::parse_stream_id;
use crate::protocol::{self, ServerKind};
use crate::rooms::Since;

/// A Server-Sent Events connection.
type SseConnection = Connection<Sse>;

/// What an SSE connection keeps beyond the core: until its rooms are
/// joined, what it still has to do to open.
#[derive(Default)]
pub(crate) struct Sse {
    opening: Option<Box<Opening>>,
}

/// Rooms to join as the stream opens (each with where to recover it
/// from), and the response head to send once they are.
struct Opening {
    rooms: Vec<(RoomName, Option<Since>)>,
    head: Bytes,
}

impl Sse {
    /// A subscriber to `rooms` whose response begins with `head`.
    pub(crate) fn new(rooms: Vec<(RoomName, Option<Since>)>, head: Bytes) -> Self {
        Self { opening: Some(Box::new(Opening { rooms, head })) }
    }
}

impl Transport for Sse {
    const KIND: TransportKind = TransportKind::Sse;

    /// Messages, and the `joined` of a room it could not recover (a room
    /// writes no other `joined` to a stream: see `Outbox::keeps_positions`).
    fn carries(kind: ServerKind) -> bool {
        matches!(kind, ServerKind::Message | ServerKind::Direct | ServerKind::Broadcast | ServerKind::Joined)
    }

    /// Says why in a comment, and ends the body.
    fn close_bytes(&self, code: u16, reason: &str) -> Bytes {
        let mut out = BytesMut::new();
        chunk(&mut out, format!(": close {code} {reason}\n\n").as_bytes());
        out.put_slice(b"0\r\n\r\n");
        out.freeze()
    }

    fn opened(conn: &mut SseConnection) {
        let Some(opening) = conn.transport.opening.take() else { return };
        let Opening { rooms, head } = *opening;
        conn.outbox().cork();
        // Every room has its place in the stream's ids from the start: a
        // room resuming is where the client left it until its join says
        // otherwise, the others start live until theirs.
        conn.outbox().expect_rooms(rooms.iter().map(|(room, since)| {
            (room, since.as_ref().and_then(|s| Some((s.epoch.as_deref()?, s.seq))))
        }));
        conn.join_all(rooms, move |conn, joined, _| {
            if joined {
                conn.outbox().start(head);
            } else {
                conn.outbox().refuse(super::handshake::response(503, "the rooms are unavailable, try again", &[]));
                conn.close(1011, "the rooms are unavailable");
            }
        });
    }

    /// A subscriber sends nothing after its request; whatever comes is ignored.
    fn on_input(_: &mut SseConnection, input: &mut [u8]) -> usize {
        input.len()
    }
}

/// Pairs each room with where `last_event_id` (a `Last-Event-ID`) says the
/// stream was in it. An id that cannot be read is ignored, and a room it
/// does not name starts live.
pub(crate) fn resume_from(rooms: Vec<RoomName>, last_event_id: Option<&str>) -> Vec<(RoomName, Option<Since>)> {
    let positions = last_event_id.and_then(parse_stream_id).unwrap_or_default();
    rooms
        .into_iter()
        .map(|room| {
            let since = positions
                .iter()
                .find(|p| p.room == *room)
                .map(|p| Since { seq: p.seq, epoch: Some(p.epoch.as_str().into()) });
            (room, since)
        })
        .collect()
}

/// Appends `payload` as one chunk of a chunked body.
fn chunk(out: &mut BytesMut, payload: &[u8]) {
    out.put_slice(format!("{:x}\r\n", payload.len()).as_bytes());
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}


/// The distinct rooms of every `rooms` parameter, each a comma-separated
/// list; an error names the first bad room.
pub(crate) fn requested_rooms(query: &str, max: usize) -> Result<Vec<RoomName>, String> {
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
    Ok(rooms.into_iter().map(RoomName::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::{event, SSE_PING};

    /// The body of one chunk.
    fn unchunked(bytes: &[u8]) -> &[u8] {
        let text = std::str::from_utf8(bytes).unwrap();
        let (size, rest) = text.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        assert_eq!(&rest[size..], "\r\n");
        &bytes[bytes.len() - 2 - size..bytes.len() - 2]
    }

    #[test]
    fn an_event_is_one_data_line_in_one_chunk() {
        assert_eq!(unchunked(&event(r#"{"type":"message"}"#)), b"data: {\"type\":\"message\"}\n\n");
        assert_eq!(unchunked(SSE_PING), b": ping\n\n");
    }

    #[test]
    fn line_breaks_in_a_frame_become_spaces_on_one_line() {
        let text = "{\"type\":\"message\",\"data\":{\r\n\"a\":1,\n\"b\":\"x y\"\r}}";
        let chunk = event(text);
        let chunk = std::str::from_utf8(unchunked(&chunk)).unwrap();
        let line = chunk.strip_suffix("\n\n").unwrap().strip_prefix("data: ").unwrap();
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value, serde_json::json!({"type": "message", "data": {"a": 1, "b": "x y"}}));
    }

    #[test]
    fn an_event_id_names_each_placed_room_and_reads_back() {
        use crate::protocol::framing::stream_id;
        let id = stream_id(
            [("a", Some(("e1", 5))), ("b", None), ("c", Some(("e1", 7))), ("d", Some(("e2", 0)))].into_iter(),
        );
        assert_eq!(id, "a,e1,5;c,,7;d,e2,0", "an epoch once while it repeats; a room not placed left out");
        let rooms: Vec<RoomName> = ["a", "b", "c", "d", "z"].into_iter().map(RoomName::from).collect();
        let resumed = resume_from(rooms, Some(&id));
        let since: Vec<Option<(u64, &str)>> =
            resumed.iter().map(|(_, s)| s.as_ref().map(|s| (s.seq, s.epoch.as_deref().unwrap()))).collect();
        assert_eq!(since, [Some((5, "e1")), None, Some((7, "e1")), Some((0, "e2")), None]);
        for bad in ["", "a", "a,e1", "a,,5", "a,e1,x", "a,e1,5,6", "a b,e1,5", "a,e1,-1"] {
            let resumed = resume_from(vec!["a".into()], Some(bad));
            assert!(resumed[0].1.is_none(), "{bad:?} is not readable");
        }
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
