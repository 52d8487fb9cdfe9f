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
pub(crate) fn event(frame: &str) -> Bytes {
    let len = frame.len() + 8;
    let mut out = BytesMut::with_capacity(len + 12);
    out.put_slice(format!("{len:x}\r\ndata: ").as_bytes());
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
