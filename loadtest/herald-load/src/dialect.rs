//! The two wire dialects: building the few frames a load client sends and
//! classifying what arrives.
//!
//! Decoding borrows from the received text and skips fields it does not need,
//! because a fan-out run parses every delivery on a single thread and that
//! parse is most of the client's work.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cli::Dialect;

/// What one received text frame means to a load client.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// engine.io's open packet (`0{...}`); the client answers with a namespace connect.
    Open,
    /// Herald's `welcome`, or Socket.IO's namespace connect (`40{...}`).
    Welcome { user: Option<Cow<'a, str>> },
    /// The reply to a join.
    Joined { room: Cow<'a, str> },
    /// A room message; `t` is the scheduled send time the publisher stamped, when present.
    Message { room: Cow<'a, str>, t: Option<u64> },
    /// Herald's `user_joined` / `user_left`, which members receive as others come and go.
    Presence { room: Cow<'a, str> },
    /// engine.io's ping (`2`); the client must answer `3`.
    EnginePing,
    /// The server ended the session inside the protocol (Socket.IO `41`, engine.io `1`).
    Disconnect,
    /// Anything else: errors, acks, unknown types, malformed text.
    Other,
}

/// Parses one text frame of `dialect`.
pub fn decode(dialect: Dialect, text: &str) -> Inbound<'_> {
    match dialect {
        Dialect::Herald => decode_herald(text),
        Dialect::Socketio => decode_socketio(text),
    }
}

#[derive(Deserialize)]
struct HeraldFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The part of a published `data` object that latency needs.
#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

fn stamp(data: Option<&RawValue>) -> Option<u64> {
    serde_json::from_str::<Stamp>(data?.get()).ok().map(|s| s.t)
}

fn decode_herald(text: &str) -> Inbound<'_> {
    let Ok(frame) = serde_json::from_str::<HeraldFrame>(text) else {
        return Inbound::Other;
    };
    match (frame.kind.as_ref(), frame.room) {
        ("welcome", _) => Inbound::Welcome { user: frame.user },
        ("joined", Some(room)) => Inbound::Joined { room },
        ("message", Some(room)) => Inbound::Message { room, t: stamp(frame.data) },
        ("user_joined" | "user_left", Some(room)) => Inbound::Presence { room },
        _ => Inbound::Other,
    }
}

/// A Socket.IO event name, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// The first argument of a `message` event: Herald's `message` frame, or the
/// peer's `{room, data, ts}`. Other fields are skipped.
#[derive(Deserialize)]
struct EventMessage<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The first argument of a presence event: a frame with a room.
#[derive(Deserialize)]
struct EventRoom<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
}

/// An event packet's array, `["name", arg, ...]`, read in one pass: the
/// name decides how its first argument is parsed, and any further arguments
/// (Herald's trailing recovery offset) are skipped unparsed.
struct EventArray<'a>(Inbound<'a>);

impl<'de> Deserialize<'de> for EventArray<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EventArray<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Socket.IO event array")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let Some(Name(name)) = seq.next_element::<Name<'de>>()? else {
                    return Ok(EventArray(Inbound::Other));
                };
                let inbound = match name.as_ref() {
                    "message" => match seq.next_element::<EventMessage<'de>>()? {
                        Some(msg) => Inbound::Message { room: msg.room, t: stamp(msg.data) },
                        None => Inbound::Other,
                    },
                    "user_joined" | "user_left" => match seq.next_element::<EventRoom<'de>>()? {
                        Some(arg) => Inbound::Presence { room: arg.room },
                        None => Inbound::Other,
                    },
                    // The older peer's reply to a join: `42["joined","<room>"]`.
                    "joined" => match seq.next_element::<Name<'de>>()? {
                        Some(Name(room)) => Inbound::Joined { room },
                        None => Inbound::Other,
                    },
                    _ => Inbound::Other,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventArray(inbound))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// An acknowledgement's arguments, `[reply, ...]`: Herald answers with its
/// native reply frame (`joined`, `ack`, `error`, ...) as the one argument.
struct AckArray<'a>(Inbound<'a>);

impl<'de> Deserialize<'de> for AckArray<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AckArray<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Socket.IO acknowledgement array")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let inbound = match seq.next_element::<HeraldFrame<'de>>()? {
                    Some(HeraldFrame { kind, room: Some(room), .. }) if kind == "joined" => Inbound::Joined { room },
                    _ => Inbound::Other,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AckArray(inbound))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

fn decode_socketio(text: &str) -> Inbound<'_> {
    match text.as_bytes() {
        [b'0', b'{', ..] => Inbound::Open,
        [b'1'] | [b'4', b'1', ..] => Inbound::Disconnect,
        [b'2'] => Inbound::EnginePing,
        [b'4', b'0', ..] => Inbound::Welcome { user: None },
        [b'4', b'2', ..] => decode_event(&text[2..]),
        [b'4', b'3', ..] => decode_ack(&text[2..]),
        _ => Inbound::Other,
    }
}

/// The arguments after an event's or an ack's optional id (`42` / `43`
/// already taken off): `17["message",...]` → `["message",...]`.
fn after_id(text: &str) -> &str {
    text.trim_start_matches(|c: char| c.is_ascii_digit())
}

fn decode_event(text: &str) -> Inbound<'_> {
    serde_json::from_str::<EventArray>(after_id(text)).map_or(Inbound::Other, |e| e.0)
}

fn decode_ack(text: &str) -> Inbound<'_> {
    serde_json::from_str::<AckArray>(after_id(text)).map_or(Inbound::Other, |a| a.0)
}

/// A Herald frame as a `recover` client reads it: with `seq`, `epoch` and
/// `recovered`, which fan-out does not look at.
#[derive(Debug, PartialEq)]
pub enum Sequenced<'a> {
    Welcome { user: Option<Cow<'a, str>> },
    /// `joined`; `seq` and `epoch` are missing only from a server without history.
    Joined { room: Cow<'a, str>, seq: Option<u64>, epoch: Option<Cow<'a, str>>, recovered: Option<bool> },
    /// A room message; `n` is the publisher's number for it in `data`, when present.
    Message { room: Cow<'a, str>, seq: Option<u64>, n: Option<u64> },
    Presence { room: Cow<'a, str> },
    Other,
}

#[derive(Deserialize)]
struct SequencedFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Numbered {
    n: u64,
}

/// Parses one Herald text frame for `recover`.
pub fn decode_sequenced(text: &str) -> Sequenced<'_> {
    let Ok(frame) = serde_json::from_str::<SequencedFrame>(text) else {
        return Sequenced::Other;
    };
    match (frame.kind.as_ref(), frame.room) {
        ("welcome", _) => Sequenced::Welcome { user: frame.user },
        ("joined", Some(room)) => {
            Sequenced::Joined { room, seq: frame.seq, epoch: frame.epoch, recovered: frame.recovered }
        }
        ("message", Some(room)) => Sequenced::Message {
            room,
            seq: frame.seq,
            n: frame.data.and_then(|d| serde_json::from_str::<Numbered>(d.get()).ok()).map(|d| d.n),
        },
        ("user_joined" | "user_left", Some(room)) => Sequenced::Presence { room },
        _ => Sequenced::Other,
    }
}

/// A join of `room` that asks for every message after `since`, in `epoch` when known.
pub fn join_since(room: &str, since: u64, epoch: Option<&str>) -> String {
    let mut frame = serde_json::json!({ "type": "join", "room": room, "since": since });
    if let Some(epoch) = epoch {
        frame["epoch"] = epoch.into();
    }
    frame.to_string()
}

/// The first packet a Socket.IO client sends after engine.io's open packet:
/// a connect to the default namespace, with `{"token": ...}` as its auth
/// payload when the client has one.
pub fn socketio_connect(token: Option<&str>) -> String {
    match token {
        Some(token) => format!(r#"40{{"token":{}}}"#, serde_json::Value::from(token)),
        None => "40".into(),
    }
}

/// The acknowledgement id of a Socket.IO join; a load client joins once.
pub const SOCKETIO_JOIN_ACK: u32 = 1;
/// What a Socket.IO client sends when it leaves on purpose: a disconnect
/// from the default namespace (a server then keeps nothing for its return).
pub const SOCKETIO_DISCONNECT: &str = "41";
/// The answer to engine.io's ping.
pub const SOCKETIO_PONG: &str = "3";

/// A join of `room`.
pub fn join(dialect: Dialect, room: &str) -> String {
    match dialect {
        Dialect::Herald => format!(r#"{{"type":"join","room":"{room}"}}"#),
        // Herald's shape: one object argument, and the reply (`joined`) comes as the ack.
        Dialect::Socketio => format!(r#"42{SOCKETIO_JOIN_ACK}["join",{{"room":"{room}"}}]"#),
    }
}

/// A publish into `room` stamped with its scheduled time `t_us` and sequence `n`.
/// Publishes carry no `id`: Herald then sends no `ack`, and fan-out frames are
/// the only traffic.
pub fn publish(dialect: Dialect, room: &str, t_us: u64, n: u64, pad: &str) -> String {
    match dialect {
        Dialect::Herald => {
            format!(r#"{{"type":"publish","room":"{room}","data":{{"t":{t_us},"n":{n},"pad":"{pad}"}}}}"#)
        }
        Dialect::Socketio => format!(r#"42["publish",{{"room":"{room}","data":{{"t":{t_us},"n":{n},"pad":"{pad}"}}}}]"#),
    }
}

/// Padding that brings a published `data` object to about `payload_bytes`.
pub fn padding(payload_bytes: usize) -> String {
    // `{"t":<16 digits>,"n":<up to 7 digits>,"pad":""}` takes about 40 bytes.
    "x".repeat(payload_bytes.saturating_sub(40))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(r: &str) -> Cow<'_, str> {
        Cow::Borrowed(r)
    }

    #[test]
    fn herald_frames_are_classified() {
        let h = |t| decode(Dialect::Herald, t);
        assert_eq!(
            h(r#"{"type":"welcome","conn":"c1","user":null,"node":"n","heartbeat_ms":25000}"#),
            Inbound::Welcome { user: None }
        );
        assert_eq!(h(r#"{"type":"welcome","conn":"c1","user":"load-3"}"#), Inbound::Welcome { user: Some(room("load-3")) });
        assert_eq!(h(r#"{"type":"joined","room":"r1","users":["a","b"]}"#), Inbound::Joined { room: room("r1") });
        assert_eq!(
            h(r#"{"type":"message","room":"r1","from":"u","data":{"t":123,"n":1,"pad":"xx"},"seq":4,"ts":1}"#),
            Inbound::Message { room: room("r1"), t: Some(123) }
        );
        assert_eq!(h(r#"{"type":"message","room":"r1","data":"text"}"#), Inbound::Message { room: room("r1"), t: None });
        assert_eq!(h(r#"{"type":"user_joined","room":"r1","user":"u"}"#), Inbound::Presence { room: room("r1") });
        assert_eq!(h(r#"{"type":"error","code":"RATE_LIMITED","message":"slow down"}"#), Inbound::Other);
        assert_eq!(h(r#"{"type":"ack","seq":1}"#), Inbound::Other);
        assert_eq!(h("not json"), Inbound::Other);
        assert_eq!(h(r#"{"type":"joined"}"#), Inbound::Other);
    }

    #[test]
    fn socketio_packets_are_classified() {
        let s = |t| decode(Dialect::Socketio, t);
        assert_eq!(s(r#"0{"sid":"x","pingInterval":25000}"#), Inbound::Open);
        assert_eq!(s(r#"40{"sid":"y"}"#), Inbound::Welcome { user: None });
        assert_eq!(s("2"), Inbound::EnginePing);
        assert_eq!(s("41"), Inbound::Disconnect);
        assert_eq!(s(r#"42["joined","r2"]"#), Inbound::Joined { room: room("r2") });
        assert_eq!(
            s(r#"42["message",{"room":"r2","data":{"t":77,"n":0,"pad":""},"ts":5}]"#),
            Inbound::Message { room: room("r2"), t: Some(77) }
        );
        assert_eq!(s(r#"42["pong"]"#), Inbound::Other);
        assert_eq!(s(r#"44{"message":"refused"}"#), Inbound::Other);
        assert_eq!(s("42[oops"), Inbound::Other);
    }

    #[test]
    fn socketio_packets_in_herald_shape_are_classified() {
        let s = |t| decode(Dialect::Socketio, t);
        assert_eq!(s(r#"40{"sid":"s1","pid":"p1"}"#), Inbound::Welcome { user: None });
        // A join's reply is its acknowledgement, carrying the native `joined` frame.
        assert_eq!(
            s(r#"431[{"type":"joined","room":"r1","users":["anon:c1"],"count":1,"seq":0,"epoch":"e"}]"#),
            Inbound::Joined { room: room("r1") }
        );
        assert_eq!(s(r#"4317[{"type":"joined","room":"r\"q"}]"#), Inbound::Joined { room: room("r\"q") });
        assert_eq!(s(r#"431[{"type":"ack","seq":7}]"#), Inbound::Other);
        assert_eq!(s(r#"431[{"type":"error","code":"FORBIDDEN","message":"no"}]"#), Inbound::Other);
        assert_eq!(s(r#"431[]"#), Inbound::Other);
        assert_eq!(s(r#"431[{"room":"r1"}]"#), Inbound::Other);
        // A message's first argument is the native frame; the trailing offset is skipped.
        assert_eq!(
            s(r#"42["message",{"type":"message","room":"r1","from":"u","data":{"t":99,"n":3,"pad":"xx"},"seq":7,"ts":5},"e:7"]"#),
            Inbound::Message { room: room("r1"), t: Some(99) }
        );
        assert_eq!(
            s(r#"42["message",{"type":"message","room":"r1","data":{"t":99}},"e:7",{"more":[1,2]}]"#),
            Inbound::Message { room: room("r1"), t: Some(99) }
        );
        assert_eq!(
            s(r#"42["message",{"type":"message","room":"r1","data":"plain"}]"#),
            Inbound::Message { room: room("r1"), t: None }
        );
        assert_eq!(s(r#"42["message",{"type":"message","data":{"t":1}},"o"]"#), Inbound::Other);
        assert_eq!(s(r#"42["message"]"#), Inbound::Other);
        assert_eq!(s(r#"42["user_joined",{"type":"user_joined","room":"r1","user":"u"}]"#), Inbound::Presence { room: room("r1") });
        assert_eq!(s(r#"42["user_left",{"type":"user_left","room":"r1","user":"u"},"x"]"#), Inbound::Presence { room: room("r1") });
        assert_eq!(s(r#"42["error",{"type":"error","code":"RATE_LIMITED","message":"slow down"}]"#), Inbound::Other);
        // An event with an ack id.
        assert_eq!(s(r#"4212["message",{"room":"r1","data":{"t":4}}]"#), Inbound::Message { room: room("r1"), t: Some(4) });
        assert_eq!(s(r#"44{"message":"invalid token"}"#), Inbound::Other);
        assert_eq!(s(r#"43["#), Inbound::Other);
    }

    #[test]
    fn socketio_messages_borrow_from_the_packet() {
        let text = r#"42["message",{"type":"message","room":"load-3","data":{"t":1,"n":0,"pad":""},"seq":2},"o"]"#;
        match decode(Dialect::Socketio, text) {
            Inbound::Message { room: Cow::Borrowed(r), .. } => assert_eq!(r, "load-3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn socketio_connect_carries_the_token_as_auth() {
        assert_eq!(socketio_connect(None), "40");
        let with = socketio_connect(Some("a.b\"c"));
        assert!(with.starts_with("40{"));
        let auth: serde_json::Value = serde_json::from_str(&with[2..]).unwrap();
        assert_eq!(auth, serde_json::json!({"token": "a.b\"c"}));
    }

    #[test]
    fn sequenced_frames_carry_seq_epoch_and_recovered() {
        let d = decode_sequenced;
        assert_eq!(
            d(r#"{"type":"joined","room":"r1","users":[],"count":0,"seq":7,"epoch":"e-1","recovered":true}"#),
            Sequenced::Joined { room: room("r1"), seq: Some(7), epoch: Some(room("e-1")), recovered: Some(true) }
        );
        assert_eq!(
            d(r#"{"type":"joined","room":"r1","users":[],"count":0,"seq":0,"epoch":"e"}"#),
            Sequenced::Joined { room: room("r1"), seq: Some(0), epoch: Some(room("e")), recovered: None }
        );
        assert_eq!(
            d(r#"{"type":"message","room":"r1","from":"server","data":{"n":4,"t":1,"pad":""},"seq":12,"ts":3}"#),
            Sequenced::Message { room: room("r1"), seq: Some(12), n: Some(4) }
        );
        assert_eq!(
            d(r#"{"type":"message","room":"r1","data":"x","seq":2}"#),
            Sequenced::Message { room: room("r1"), seq: Some(2), n: None }
        );
        assert_eq!(d(r#"{"type":"user_left","room":"r1","user":"u"}"#), Sequenced::Presence { room: room("r1") });
        assert_eq!(d(r#"{"type":"welcome","user":"anon:c1"}"#), Sequenced::Welcome { user: Some(room("anon:c1")) });
        assert_eq!(d(r#"{"type":"error","code":"BAD_REQUEST"}"#), Sequenced::Other);
        let join: serde_json::Value = serde_json::from_str(&join_since("load-1", 9, Some("a\"b"))).unwrap();
        assert_eq!(join, serde_json::json!({"type":"join","room":"load-1","since":9,"epoch":"a\"b"}));
        let join: serde_json::Value = serde_json::from_str(&join_since("load-1", 0, None)).unwrap();
        assert!(join.get("epoch").is_none());
    }

    #[test]
    fn built_frames_round_trip_and_have_the_asked_size() {
        let pad = padding(100);
        let frame = publish(Dialect::Herald, "load-1", 1_700_000_000_000_000, 42, &pad);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["type"], "publish");
        assert_eq!(value["data"]["t"], 1_700_000_000_000_000u64);
        let data_len = value["data"].to_string().len();
        assert!((90..=110).contains(&data_len), "{data_len}");
        assert!(value.get("id").is_none());
        let sio = publish(Dialect::Socketio, "load-1", 5, 6, "");
        let value: serde_json::Value = serde_json::from_str(&sio[2..]).unwrap();
        assert_eq!(value[0], "publish");
        assert_eq!(value[1]["room"], "load-1");
        let join_frame: serde_json::Value = serde_json::from_str(&join(Dialect::Herald, "load-1")).unwrap();
        assert_eq!(join_frame["type"], "join");
        assert_eq!(join(Dialect::Socketio, "r"), r#"421["join",{"room":"r"}]"#);
        let value: serde_json::Value = serde_json::from_str(&join(Dialect::Socketio, "load-1")[3..]).unwrap();
        assert_eq!(value, serde_json::json!(["join", {"room": "load-1"}]));
    }
}
