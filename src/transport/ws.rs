//! The WebSocket transport (`GET /ws`): the client's bytes become frames
//! here, parsed where they lie (tungstenite's frame header parser on
//! borrowed bytes, payloads unmasked in place), and whole text messages go
//! to the connection core. What is WebSocket's own lives here: control
//! frames, fragments, close codes and the size limit.
//!
//! - A frame whose header announces more than `limits.max_message_bytes`
//!   closes the connection with 1009 before any of its payload is awaited;
//!   so does a fragmented message whose fragments add up to more.
//! - The fragments of one message count once against the rate limit, and a
//!   message in more than [`MAX_FRAGMENTS`] fragments closes with 1008.
//! - Pings count against the rate limit like any frame (pongs do not).
//! - A text message that is not UTF-8 closes with 1007.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::connection::Transport;
use crate::metrics::TransportKind;
use crate::connection::core::Connection;
use crate::metrics::Fault;
use crate::protocol::close;

/// A WebSocket connection.
type WsConnection = Connection<Ws>;

/// The most fragments one message may come in.
const MAX_FRAGMENTS: u32 = 128;

/// What a WebSocket connection keeps beyond the core: a fragmented message
/// under way (nothing while idle).
#[derive(Default)]
pub(crate) struct Ws {
    fragments: Option<Box<Fragments>>,
}

/// A fragmented message being received.
struct Fragments {
    /// Text so far; empty for a binary message, which was refused at its start.
    text: Vec<u8>,
    binary: bool,
    len: usize,
    count: u32,
}

impl Transport for Ws {
    const KIND: TransportKind = TransportKind::WebSocket;

    fn close_bytes(&self, code: u16, reason: &str) -> Bytes {
        // 1005 stands for a close without a code, and never goes on the wire:
        // a client's close without one is answered without one.
        if code == close::NO_STATUS {
            return Bytes::from_static(&[0x88, 0x00]);
        }
        // A control frame's payload is at most 125 bytes: the code and 123 of reason.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason[..end];
        let mut frame = BytesMut::with_capacity(4 + reason.len());
        frame.put_u8(0x88);
        frame.put_u8(2 + reason.len() as u8);
        frame.put_u16(code);
        frame.put_slice(reason.as_bytes());
        frame.freeze()
    }

    fn on_input(conn: &mut WsConnection, input: &mut [u8]) -> usize {
        read(conn, input)
    }
}

impl OverWs for Ws {
    fn ws(&mut self) -> &mut Ws {
        self
    }

    fn on_message(conn: &mut WsConnection, text: &str) {
        conn.on_text(text)
    }

    fn on_binary(conn: &mut WsConnection, payload: &[u8]) {
        conn.on_unsupported(payload.len())
    }
}

/// A transport whose client speaks WebSocket frames (Herald's own, and
/// Socket.IO's): what it does with a whole message.
pub(crate) trait OverWs: Transport {
    fn ws(&mut self) -> &mut Ws;
    /// A whole text message.
    fn on_message(conn: &mut Connection<Self>, text: &str);
    /// A binary message (or its first fragment).
    fn on_binary(conn: &mut Connection<Self>, payload: &[u8]);
}

/// Reads as many whole WebSocket frames from `input` as the connection
/// takes now (see [`Transport::on_input`]); returns the bytes used.
pub(crate) fn read<T: OverWs>(conn: &mut Connection<T>, input: &mut [u8]) -> usize {
    let max = conn.services().config.limits.max_message_bytes as u64;
    let mut at = 0;
    while at < input.len() && !conn.is_closing() && conn.pending.is_none() {
        let rest = &mut input[at..];
        let mut cursor = Cursor::new(&*rest);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                // The length may be known before the mask key is in.
                if announced_len(rest).is_some_and(|len| len > max) {
                    too_big(conn);
                    return input.len();
                }
                break;
            }
            Err(_) => {
                conn.close(close::PROTOCOL_ERROR, "protocol error");
                return input.len();
            }
        };
        if len > max {
            too_big(conn);
            return input.len();
        }
        let start = cursor.position() as usize;
        let end = start + len as usize;
        if rest.len() < end {
            break;
        }
        let payload = &mut rest[start..end];
        at += end;
        match header.mask {
            Some(mask) => unmask(payload, mask),
            None => {
                conn.close(close::PROTOCOL_ERROR, "client frames must be masked");
                return input.len();
            }
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            conn.close(close::PROTOCOL_ERROR, "reserved bits set");
            return input.len();
        }
        on_frame(conn, &header, payload);
    }
    at
}

/// Handles one whole frame.
fn on_frame<T: OverWs>(conn: &mut Connection<T>, header: &FrameHeader, payload: &[u8]) {
    match header.opcode {
        OpCode::Data(Data::Text | Data::Binary) if conn.transport.ws().fragments.is_some() => {
            conn.close(close::PROTOCOL_ERROR, "a new message inside a fragmented one")
        }
        OpCode::Data(Data::Text) if header.is_final => on_text(conn, payload),
        OpCode::Data(Data::Binary) if header.is_final => T::on_binary(conn, payload),
        OpCode::Data(Data::Text) => {
            conn.transport.ws().fragments =
                Some(Box::new(Fragments { text: payload.to_vec(), binary: false, len: payload.len(), count: 1 }));
        }
        OpCode::Data(Data::Binary) => {
            conn.transport.ws().fragments =
                Some(Box::new(Fragments { text: Vec::new(), binary: true, len: payload.len(), count: 1 }));
            T::on_binary(conn, payload);
        }
        OpCode::Data(Data::Continue) => on_continuation(conn, header.is_final, payload),
        OpCode::Control(_) if !header.is_final || payload.len() > 125 => {
            conn.close(close::PROTOCOL_ERROR, "invalid control frame")
        }
        OpCode::Control(Control::Ping) => {
            if conn.admit(None, false) {
                conn.outbox().write(pong(payload), false);
            }
        }
        OpCode::Control(Control::Pong) => {}
        OpCode::Control(Control::Close) => on_close(conn, payload),
        OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
            conn.close(close::PROTOCOL_ERROR, "reserved opcode")
        }
    }
}

fn on_continuation<T: OverWs>(conn: &mut Connection<T>, last: bool, payload: &[u8]) {
    let max = conn.services().config.limits.max_message_bytes;
    let Some(fragments) = conn.transport.ws().fragments.as_mut() else {
        return conn.close(close::PROTOCOL_ERROR, "a continuation with no message under way");
    };
    fragments.count += 1;
    fragments.len += payload.len();
    if !fragments.binary {
        fragments.text.extend_from_slice(payload);
    }
    if fragments.len > max {
        conn.transport.ws().fragments = None;
        return too_big(conn);
    }
    if fragments.count > MAX_FRAGMENTS {
        conn.transport.ws().fragments = None;
        conn.services().metrics.frames_dropped(Fault::Size, 1);
        return conn.close(close::POLICY, "too many fragments");
    }
    if !last {
        return;
    }
    if let Some(fragments) = conn.transport.ws().fragments.take() {
        if !fragments.binary {
            on_text(conn, &fragments.text);
        }
    }
}

fn on_text<T: OverWs>(conn: &mut Connection<T>, payload: &[u8]) {
    match std::str::from_utf8(payload) {
        Ok(text) => T::on_message(conn, text),
        Err(_) => conn.close(close::INVALID_UTF8, "invalid utf-8"),
    }
}

fn on_close<T: OverWs>(conn: &mut Connection<T>, payload: &[u8]) {
    match payload {
        [] => conn.closed_by_client(close::NO_STATUS),
        [hi, lo, reason @ ..] if std::str::from_utf8(reason).is_ok() => match u16::from_be_bytes([*hi, *lo]) {
            code if sendable(code) => conn.closed_by_client(code),
            _ => conn.close(close::PROTOCOL_ERROR, "invalid close code"),
        },
        _ => conn.close(close::PROTOCOL_ERROR, "invalid close frame"),
    }
}

/// Whether an endpoint may put `code` in a close frame (RFC 6455 7.4): the
/// codes the RFC and IANA define for use on the wire, and 3000–4999 for
/// libraries and applications. 1005, 1006 and 1015 only stand for closes
/// without a frame's code.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn too_big<T: Transport>(conn: &mut Connection<T>) {
    conn.services().metrics.frames_dropped(Fault::Size, 1);
    conn.close(close::TOO_BIG, close::TOO_BIG_REASON);
}

/// The payload length a frame header announces, once enough of it is in.
fn announced_len(bytes: &[u8]) -> Option<u64> {
    match *bytes.get(1)? & 0x7f {
        126 => Some(u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?))),
        127 => Some(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)),
        short => Some(u64::from(short)),
    }
}

pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

pub(crate) fn pong(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(2 + payload.len());
    frame.put_u8(0x8a);
    frame.put_u8(payload.len() as u8);
    frame.put_slice(payload);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_carry_their_code_and_a_reason_cut_to_fit() {
        let frame = Ws::default().close_bytes(4008, "slow consumer");
        assert_eq!(&frame[..4], &[0x88, 15, 0x0f, 0xa8]);
        assert_eq!(&frame[4..], b"slow consumer");
        let long = "é".repeat(100);
        let frame = Ws::default().close_bytes(1000, &long);
        assert!(frame[1] as usize <= 125 && frame.len() == 2 + frame[1] as usize);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn the_announced_length_is_read_before_the_mask_key() {
        assert_eq!(announced_len(&[0x81]), None);
        assert_eq!(announced_len(&[0x81, 0x85]), Some(5));
        assert_eq!(announced_len(&[0x81, 0xfe, 0x01]), None);
        assert_eq!(announced_len(&[0x81, 0xfe, 0x01, 0x00]), Some(256));
        assert_eq!(announced_len(&[0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]), Some(1 << 32));
    }
}
