//! The wire protocol (`PROTOCOL.md`, v1): every client frame, server frame,
//! error code and close code, in one module.
//!
//! Decoding borrows from the received text: fields are first split out as raw
//! JSON slices, then each is checked on its own so every failure names its
//! field. `data` is never parsed into a tree: its raw text goes into the
//! outgoing `message` frame as is, so a publish costs one scan of the payload.
//!
//! [`client`] decodes what clients send, [`server`] encodes what Herald sends;
//! limits, error codes and close codes are here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::ids::UserId;

/// Longest room name in bytes.
pub(crate) const MAX_ROOM_LEN: usize = 128;
/// Deepest nesting of arrays and objects accepted inside `data`: `[[1]]` is 2.
///
/// serde_json's own limit (128 levels, counting the frame's object) does not
/// apply here: `data` is captured as raw text, which serde_json skips over
/// without a depth limit and never parses into a tree, so this is the one
/// bound, checked by [`nests_deeper_than`] without recursion.
pub(crate) const MAX_DATA_DEPTH: usize = 128;
/// What a `data` deeper than [`MAX_DATA_DEPTH`] is refused with.
pub const DATA_TOO_DEEP: &str = "data nests deeper than 128 levels";
/// Most user ids one `status` frame may ask about.
pub(crate) const MAX_STATUS_USERS: usize = 1000;
/// Longest user id accepted in `direct.to` and `status.users`.
pub(crate) const MAX_USER_LEN: usize = 256;

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
pub(crate) mod close {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// Not a code on the wire: what a close frame without a code stands for.
    pub(crate) const NO_STATUS: u16 = 1005;
    /// A text message that is not UTF-8.
    pub(crate) const INVALID_UTF8: u16 = 1007;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const INTERNAL: u16 = 1011;
    pub(crate) const AUTH_TIMEOUT: u16 = 4001;
    pub(crate) const INVALID_TOKEN: u16 = 4002;
    pub(crate) const NOT_AUTHENTICATED: u16 = 4003;
    pub(crate) const SLOW_CONSUMER: u16 = 4008;

    pub(crate) const AUTH_TIMEOUT_REASON: &str = "authentication timeout";
    pub(crate) const INVALID_TOKEN_REASON: &str = "invalid token";
    pub(crate) const NOT_AUTHENTICATED_REASON: &str = "not authenticated";
    const GOING_AWAY_REASON: &str = "server shutting down";
    pub(crate) const POLICY_REASON: &str = "rate limit exceeded";
    pub(crate) const TOO_BIG_REASON: &str = "message too big";
    pub(crate) const INTERNAL_REASON: &str = "internal error";
    const SLOW_CONSUMER_REASON: &str = "slow consumer";
    pub(crate) const HEARTBEAT_REASON: &str = "heartbeat timeout";

    /// The reason Herald gives with a close it asks for by `code` alone
    /// (a heartbeat timeout is the one 1000 the server sends unasked).
    pub(crate) fn reason(code: u16) -> &'static str {
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
pub(crate) fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether `user` is an acceptable user id: 1 to [`MAX_USER_LEN`] bytes.
pub(crate) fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_LEN
}

/// Milliseconds since the Unix epoch, for `ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

mod client;
pub(crate) mod framing;
mod server;
pub(crate) mod socketio;
#[cfg(test)]
mod tests;

pub use client::*;
pub use server::*;
