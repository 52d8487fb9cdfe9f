//! Request bodies of the server API: read up to `limits.max_message_bytes`,
//! then split into fields that are checked one by one, so every 400 names the
//! field at fault. `data` stays raw JSON text and goes into the outgoing frame
//! as is, exactly like a WebSocket publish.

use std::borrow::Cow;

use actix_web::web::{Bytes, Payload};
use serde::Deserialize;
use serde_json::value::RawValue;

use std::time::Duration;

use super::error::ApiError;
use crate::delivery::ConnId;
use crate::protocol::{nests_deeper_than, present, string, valid_room, valid_user, DATA_TOO_DEEP, MAX_DATA_DEPTH};

/// Reads the whole body, refusing it once it grows past `limit` bytes or
/// takes longer than `timeout` to arrive.
pub(crate) async fn read(payload: Payload, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, payload.to_bytes_limited(limit)).await {
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(_))) => Err(ApiError::bad_request("the body could not be read")),
        Ok(Err(_)) => Err(ApiError::TooLarge(limit)),
        Err(_) => Err(ApiError::Timeout),
    }
}

/// The fields any API body may carry, as raw JSON; a present `null` is
/// `Some("null")`, so a missing `data` and `data: null` stay apart.
#[derive(Deserialize)]
pub(crate) struct Fields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    user: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    from: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    target: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    conn: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// Splits `body`, which must be one JSON object. Unknown fields are ignored.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not valid UTF-8"))?;
        if !text.trim_start().starts_with('{') {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                ApiError::bad_request("the body repeats a field")
            } else {
                ApiError::bad_request("the body is not valid JSON")
            }
        })
    }

    /// `room`: required, 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
    pub(crate) fn room(&self) -> Result<Cow<'a, str>, ApiError> {
        self.room
            .and_then(string)
            .filter(|room| valid_room(room))
            .ok_or_else(|| ApiError::bad_request("room must be a string of 1 to 128 bytes of [A-Za-z0-9_.:-]"))
    }

    /// `user`: required, a user id of 1 to 256 bytes.
    pub(crate) fn user(&self) -> Result<Cow<'a, str>, ApiError> {
        self.user
            .and_then(string)
            .filter(|user| valid_user(user))
            .ok_or_else(|| ApiError::bad_request("user must be a string of 1 to 256 bytes"))
    }

    /// `from`: optional, a user id of 1 to 256 bytes; `default` when absent.
    pub(crate) fn sender_or(&self, default: &'static str) -> Result<Cow<'a, str>, ApiError> {
        match self.from {
            None => Ok(Cow::Borrowed(default)),
            Some(raw) => string(raw)
                .filter(|from| valid_user(from))
                .ok_or_else(|| ApiError::bad_request("from must be a string of 1 to 256 bytes")),
        }
    }

    /// `room` when present (and then checked like [`Self::room`]).
    pub(crate) fn room_if_any(&self) -> Result<Option<Cow<'a, str>>, ApiError> {
        match self.room {
            None => Ok(None),
            Some(_) => self.room().map(Some),
        }
    }

    /// `target` of a fault injection: a required string.
    pub(crate) fn target(&self) -> Result<Cow<'a, str>, ApiError> {
        self.target
            .and_then(string)
            .ok_or_else(|| ApiError::bad_request("target must be room, registry, presence or connection"))
    }

    /// `conn`: a connection id as `welcome` gives it (`"<node>-<n>"`), or its number.
    pub(crate) fn conn(&self, node: &str) -> Result<ConnId, ApiError> {
        let bad = || ApiError::bad_request("conn must be a connection id as in welcome (\"<node>-<n>\") or its number");
        let raw = self.conn.ok_or_else(bad)?;
        if let Ok(n) = serde_json::from_str::<u64>(raw.get()) {
            return Ok(ConnId(n));
        }
        let text = string(raw).ok_or_else(bad)?;
        let number = text.strip_prefix(node).and_then(|rest| rest.strip_prefix('-')).unwrap_or(&text);
        number.parse().map(ConnId).map_err(|_| bad())
    }

    /// `data`: required (it may be null), any JSON nested at most [`MAX_DATA_DEPTH`] levels.
    pub(crate) fn data(&self) -> Result<&'a RawValue, ApiError> {
        match self.data {
            None => Err(ApiError::bad_request("data is required (it may be null)")),
            Some(data) if nests_deeper_than(data.get(), MAX_DATA_DEPTH) => Err(ApiError::bad_request(DATA_TOO_DEEP)),
            Some(data) => Ok(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message.into_owned(),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn keeps_data_verbatim_and_null_apart_from_missing() {
        let fields = Fields::parse(br#"{"room":"a:b","data": {"x" : [1]},"extra":1}"#).unwrap();
        assert_eq!(fields.room().unwrap(), "a:b");
        assert_eq!(fields.data().unwrap().get(), r#"{"x" : [1]}"#);
        assert_eq!(Fields::parse(br#"{"data":null}"#).unwrap().data().unwrap().get(), "null");
        assert!(message(Fields::parse(b"{}").unwrap().data()).contains("data"));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert!(message(Fields::parse(b"{").map(|_| ())).contains("not valid JSON"));
        assert!(message(Fields::parse(b"[1]").map(|_| ())).contains("JSON object"));
        assert!(message(Fields::parse(br#"{"room":"a","room":"b"}"#).map(|_| ())).contains("repeats"));
        assert!(message(Fields::parse(b"\xff").map(|_| ())).contains("UTF-8"));
        for body in [r#"{"room":"a b"}"#, r#"{"room":5}"#, r#"{"room":""}"#, "{}"] {
            assert!(message(Fields::parse(body.as_bytes()).unwrap().room()).contains("room"), "{body}");
        }
        for body in [r#"{"user":7}"#, r#"{"user":""}"#, "{}"] {
            assert!(message(Fields::parse(body.as_bytes()).unwrap().user()).contains("user"), "{body}");
        }
        assert!(message(Fields::parse(br#"{"from":1}"#).unwrap().sender_or("server")).contains("from"));
        assert_eq!(Fields::parse(b"{}").unwrap().sender_or("server").unwrap(), "server");
        let deep = format!(r#"{{"data":{}{}}}"#, "[".repeat(129), "]".repeat(129));
        assert_eq!(message(Fields::parse(deep.as_bytes()).unwrap().data()), DATA_TOO_DEEP);
        let deepest = format!(r#"{{"data":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        assert_eq!(Fields::parse(deepest.as_bytes()).unwrap().data().unwrap().get().len(), 256);
    }

    #[test]
    fn a_conn_is_the_welcome_id_or_its_number() {
        let conn = |body: &str| Fields::parse(body.as_bytes()).unwrap().conn("n1");
        assert_eq!(conn(r#"{"conn":"n1-42"}"#).unwrap(), ConnId(42));
        assert_eq!(conn(r#"{"conn":42}"#).unwrap(), ConnId(42));
        assert_eq!(conn(r#"{"conn":"42"}"#).unwrap(), ConnId(42));
        for bad in [r#"{"conn":"n2-42"}"#, r#"{"conn":-1}"#, r#"{"conn":null}"#, "{}"] {
            assert!(message(conn(bad)).contains("conn"), "{bad}");
        }
    }
}
