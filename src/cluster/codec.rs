//! The wire format of everything one node tells the others through Redis.
//!
//! A payload is one version byte, then the [`Envelope`] encoded with bincode
//! 2 (serde, standard config). The version byte is read before anything
//! else, so a node meeting a payload from a newer release drops it with a
//! clear error instead of misreading it.
//!
//! A *sequenced* payload (a room message numbered by Redis as it is
//! published, see `relay`) is the number in ASCII digits, a `:`, then a
//! payload as above. Digits never start a plain payload (its version byte
//! is 1), so [`decode_incoming`] tells the two apart. bincode is unmaintained
//! (RUSTSEC-2025-0141) and 3.0.0 is a tombstone; this module is the only
//! place that touches it, so swapping the format is a change here alone.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RoomName, UserId};

/// The version this node writes and the only one it reads.
const VERSION: u8 = 1;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that sent it; a node drops its own echoes.
    pub origin: NodeId,
    /// When the origin sent it (µs since the Unix epoch), for relay latency.
    pub sent_us: u64,
    pub body: Body,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A message for the members of `room`. Its `seq` is given by the
    /// backplane as it is published, so every node (the origin too) builds
    /// the `message` frame itself, once, from these fields. `data` is JSON text.
    Message {
        room: RoomName,
        from: UserId,
        data: String,
        ts: u64,
        /// The origin's id for this publish, to match it with its `ack`.
        token: u64,
        /// The origin's connection that must not receive it (`echo: false`).
        except: Option<u64>,
    },
    /// The origin now has its first (`joined`) or no longer any (`!joined`)
    /// connection of `user` in `room`.
    Presence { room: RoomName, user: UserId, joined: bool },
    /// `user` is (or stopped) typing in `room`.
    Typing { room: RoomName, user: UserId, typing: bool },
    /// A `direct` frame (JSON text) for every connection of `user`.
    Direct { user: UserId, frame: String },
    /// A `broadcast` frame (JSON text) for every connection.
    Broadcast { frame: String },
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("envelope version {0}, this node reads version {VERSION}")]
    Version(u8),
    #[error("malformed envelope: {0}")]
    Malformed(bincode::error::DecodeError),
    #[error("{0} bytes after the envelope")]
    Trailing(usize),
    #[error("malformed sequence number")]
    Sequence,
}

/// The largest envelope read: a bad length prefix cannot make a node
/// allocate more than this.
const MAX_ENVELOPE: usize = 16 * 1024 * 1024;

/// `envelope` as a payload.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding into a Vec only fails for types serde cannot represent; an
    // Envelope is plain data.
    bincode::serde::encode_into_std_write(envelope, &mut out, bincode::config::standard())
        .expect("an envelope always encodes");
    out
}

/// `payload` numbered `seq`, as Redis publishes it.
pub fn sequenced(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = seq.to_string().into_bytes();
    out.push(b':');
    out.extend_from_slice(payload);
    out
}

/// The number (if sequenced) and envelope of an incoming payload.
pub(crate) fn decode_incoming(payload: &[u8]) -> Result<(Option<u64>, Envelope), DecodeError> {
    if !payload.first().is_some_and(u8::is_ascii_digit) {
        return Ok((None, decode(payload)?));
    }
    let colon = payload.iter().position(|&b| b == b':').ok_or(DecodeError::Sequence)?;
    let seq = std::str::from_utf8(&payload[..colon]).ok().and_then(|s| s.parse().ok()).ok_or(DecodeError::Sequence)?;
    Ok((Some(seq), decode(&payload[colon + 1..])?))
}

/// The envelope in `payload`.
pub fn decode(payload: &[u8]) -> Result<Envelope, DecodeError> {
    let (&version, rest) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let config = bincode::config::standard().with_limit::<MAX_ENVELOPE>();
    let (envelope, read) = bincode::serde::decode_from_slice(rest, config).map_err(DecodeError::Malformed)?;
    if read != rest.len() {
        return Err(DecodeError::Trailing(rest.len() - read));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Envelope> {
        let envelope = |body| Envelope { origin: "node-a".into(), sent_us: 1_795_445_034_374_000, body };
        vec![
            envelope(Body::Message {
                room: "chat:1".into(),
                from: "alice".into(),
                data: r#"{"text":"hi"}"#.into(),
                ts: 1,
                token: 7,
                except: Some(3),
            }),
            envelope(Body::Presence { room: "chat:1".into(), user: "bob".into(), joined: true }),
            envelope(Body::Typing { room: "chat:1".into(), user: "bob".into(), typing: false }),
            envelope(Body::Direct { user: "alice".into(), frame: r#"{"type":"direct"}"#.into() }),
            envelope(Body::Broadcast { frame: "{}".into() }),
        ]
    }

    #[test]
    fn every_envelope_round_trips() {
        for envelope in samples() {
            let payload = encode(&envelope);
            assert_eq!(payload[0], VERSION);
            assert_eq!(decode(&payload).unwrap(), envelope);
        }
    }

    #[test]
    fn the_wire_format_is_pinned() {
        // Room names, user ids and node ids are strings on the wire: a length, then their UTF-8 bytes.
        let pinned = [
            "01066e6f64652d61fd70d37c9ff26006000006636861743a3105616c6963650d7b2274657874223a226869227d01070103",
            "01066e6f64652d61fd70d37c9ff26006000106636861743a3103626f6201",
            "01066e6f64652d61fd70d37c9ff26006000206636861743a3103626f6200",
            "01066e6f64652d61fd70d37c9ff26006000305616c696365117b2274797065223a22646972656374227d",
            "01066e6f64652d61fd70d37c9ff260060004027b7d",
        ];
        for (envelope, pinned) in samples().iter().zip(pinned) {
            assert_eq!(data_encoding::HEXLOWER.encode(&encode(envelope)), pinned, "{envelope:?}");
        }
    }

    #[test]
    fn sequenced_payloads_carry_their_number() {
        let envelope = samples().remove(0);
        let payload = encode(&envelope);
        assert_eq!(decode_incoming(&payload).unwrap(), (None, envelope.clone()));
        assert_eq!(decode_incoming(&sequenced(42, &payload)).unwrap(), (Some(42), envelope));
        for bad in [&b"42"[..], b"4x:", b"99999999999999999999999:"] {
            assert!(matches!(decode_incoming(bad), Err(DecodeError::Sequence)), "{bad:?}");
        }
    }

    #[test]
    fn another_version_is_refused_before_it_is_read() {
        let mut payload = encode(&samples()[0]);
        payload[0] = VERSION + 1;
        assert!(matches!(decode(&payload), Err(DecodeError::Version(v)) if v == VERSION + 1));
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn a_malformed_envelope_says_why_once() {
        let payload = encode(&samples()[0]);
        let error = decode(&payload[..2]).unwrap_err();
        assert!(matches!(error, DecodeError::Malformed(_)), "{error:?}");
        assert!(std::error::Error::source(&error).is_none(), "the cause is in the message, not also a source");
        assert!(error.to_string().len() > "malformed envelope: ".len(), "{error}");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let payload = encode(&samples()[0]);
        for cut in 1..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(DecodeError::Trailing(1))));
        // A length prefix claiming far more than the payload holds.
        let huge = [VERSION, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode(&huge).is_err());
        for seed in 0..200u32 {
            let junk: Vec<u8> = std::iter::once(VERSION).chain((0..seed % 40).map(|i| (seed * 31 + i * 7) as u8)).collect();
            let _ = decode(&junk);
        }
    }
}
