//! How frames look on each transport's socket, beyond the WebSocket text
//! frames [`Encoded`](super::Encoded) builds: the heartbeats, SSE events,
//! and reading a frame's text back (tests and recorders).

use bytes::{BufMut, Bytes, BytesMut};

/// The WebSocket heartbeat: a ping with no payload.
pub(crate) const WS_PING: &[u8] = &[0x89, 0x00];

/// The SSE heartbeat: a comment, as one chunk.
pub(crate) const SSE_PING: &[u8] = b"8\r\n: ping\n\n\r\n";

/// `frame` as one event on one `data:` line, in one chunk. JSON needs no line
/// break, but a client's `data` may carry some between its tokens (it is
/// relayed verbatim); there they are whitespace, and become spaces.
#[cfg(test)]
pub(crate) fn event(frame: &str) -> Bytes {
    event_with_id(None, frame)
}

/// [`event`], with an `id:` line first when `id` is given.
pub(crate) fn event_with_id(id: Option<&str>, frame: &str) -> Bytes {
    let id_len = id.map_or(0, |id| id.len() + 5);
    let len = id_len + frame.len() + 8;
    let mut out = BytesMut::with_capacity(len + 12);
    out.put_slice(format!("{len:x}\r\n").as_bytes());
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    let start = out.len();
    out.put_slice(frame.as_bytes());
    for byte in &mut out[start..] {
        if matches!(*byte, b'\r' | b'\n') {
            *byte = b' ';
        }
    }
    out.put_slice(b"\n\n\r\n");
    out.freeze()
}

/// An event with only an `id:` line: no event reaches the page, but the
/// client's last event id is set (a stream that got no message yet can
/// still resume from where it started).
pub(crate) fn id_event(id: &str) -> Bytes {
    let len = id.len() + 6;
    Bytes::from(format!("{len:x}\r\nid: {id}\n\n\r\n"))
}

/// One room's position in an SSE stream: its epoch and the last `seq` the
/// stream delivered of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub room: String,
    pub epoch: String,
    pub seq: u64,
}

/// The event id of a stream at `positions` (rooms not placed yet are left
/// out: they start live): `room,epoch,seq` entries joined by `;`, the epoch
/// left empty when it is the one before it (on one node, every room's), so
/// `lobby,3k9d1mq0a7c2e,5;news,,7`. Room names and epochs hold neither
/// separator.
pub(crate) fn stream_id<'a>(positions: impl Iterator<Item = (&'a str, Option<(&'a str, u64)>)>) -> String {
    let mut id = String::new();
    let mut last_epoch = None;
    for (room, (epoch, seq)) in positions.filter_map(|(room, at)| Some((room, at?))) {
        if !id.is_empty() {
            id.push(';');
        }
        id.push_str(room);
        id.push(',');
        if last_epoch != Some(epoch) {
            id.push_str(epoch);
            last_epoch = Some(epoch);
        }
        id.push(',');
        id.push_str(&seq.to_string());
    }
    id
}

/// The positions a `Last-Event-ID` names, or `None` when it cannot be
/// read (then the stream starts live).
pub(crate) fn parse_stream_id(id: &str) -> Option<Vec<Position>> {
    let mut positions = Vec::new();
    let mut last_epoch: Option<&str> = None;
    for part in id.trim().split(';') {
        let mut fields = part.split(',');
        let (room, epoch, seq) = (fields.next()?, fields.next()?, fields.next()?);
        let epoch = match epoch {
            "" => last_epoch?,
            epoch => epoch,
        };
        if fields.next().is_some() || !super::valid_room(room) {
            return None;
        }
        last_epoch = Some(epoch);
        positions.push(Position { room: room.to_owned(), epoch: epoch.to_owned(), seq: seq.parse().ok()? });
    }
    Some(positions)
}

/// The text of a whole unmasked server frame (tests and recorders).
pub(crate) fn payload_text(frame: &[u8]) -> String {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return String::new(),
    };
    String::from_utf8_lossy(frame.get(start..).unwrap_or_default()).into_owned()
}
