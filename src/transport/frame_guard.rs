//! A guard on the bytes of an upgraded WebSocket connection that refuses an
//! oversized frame from its header, before any of its payload is buffered.
//!
//! actix-http's frame parser waits for a frame's whole payload before it
//! compares the frame's length with the limit, so a header announcing a
//! gigabyte would have the server buffer a gigabyte first. The guard reads
//! the same bytes as they arrive, decodes only frame headers (and skips
//! payloads by count), and ends the stream with an error as soon as a header
//! declares more than the limit. It marks the connection's [`Control`] so the
//! connection closes with 1009 rather than a generic protocol error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_http::error::PayloadError;
use actix_web::web::Bytes;
use futures_core::Stream;

use crate::connection::Control;

/// Where the guard is in the frame sequence.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a frame header; `have` bytes of it are in `header`.
    Header { header: [u8; 10], have: usize },
    /// Skipping `left` payload bytes (plus the mask key still to come).
    Payload { left: u64 },
}

/// How many leading header bytes carry the payload length: 2, then 2 or 8
/// more once the second byte says the length is extended.
fn length_bytes(header: &[u8; 10], have: usize) -> usize {
    match (have >= 2).then(|| header[1] & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Wraps a connection's incoming byte stream.
pub struct FrameGuard<S> {
    inner: S,
    max: u64,
    state: State,
    control: Arc<Control>,
    tripped: bool,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, max: usize, control: Arc<Control>) -> Self {
        Self { inner, max: max as u64, state: State::Header { header: [0; 10], have: 0 }, control, tripped: false }
    }

    /// Follows frame boundaries through `bytes`; false once a header
    /// declares a payload over the limit.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { left } => {
                    let n = (*left).min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Header { header: [0; 10], have: 0 };
                    }
                }
                State::Header { header, have } => {
                    if *have < length_bytes(header, *have) {
                        let n = (length_bytes(header, *have) - *have).min(bytes.len());
                        header[*have..*have + n].copy_from_slice(&bytes[..n]);
                        *have += n;
                        bytes = &bytes[n..];
                        if *have < length_bytes(header, *have) {
                            continue;
                        }
                    }
                    let length = match header[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
                        127 => u64::from_be_bytes(header[2..10].try_into().unwrap_or([0xff; 8])),
                        short => u64::from(short),
                    };
                    if length > self.max {
                        return false;
                    }
                    let mask = if header[1] & 0x80 != 0 { 4 } else { 0 };
                    self.state = match length.saturating_add(mask) {
                        0 => State::Header { header: [0; 10], have: 0 },
                        left => State::Payload { left },
                    };
                }
            }
        }
        true
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            Some(Ok(chunk)) if !self.scan(&chunk) => {
                self.tripped = true;
                self.control.mark_oversized();
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(futures_util::stream::empty(), max, Arc::new(Control::default()))
    }

    /// A masked client frame header for a payload of `len` bytes, plus its mask key.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=65535 => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_chunking() {
        let stream: Vec<u8> = [frame(0), frame(10), frame(125), frame(126), frame(1000), frame(1024)].concat();
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut g = guard(1024);
            assert!(stream.chunks(chunk).all(|c| g.scan(c)), "chunk size {chunk}");
        }
    }

    #[test]
    fn an_oversized_header_trips_before_its_payload() {
        for len in [1025, 70_000, 1 << 30, u64::MAX] {
            let mut g = guard(1024);
            assert!(g.scan(&frame(10)));
            let h = header(len);
            // The length is known before the mask key arrives.
            assert!(!g.scan(&h[..h.len() - 4]), "length {len}");
        }
    }
}
