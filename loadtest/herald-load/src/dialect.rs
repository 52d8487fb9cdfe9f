//! The two wire dialects: building the few frames a load client sends and
//! classifying what arrives.
//!
//! Decoding borrows from the received text and skips fields it does not need,
//! because a fan-out run parses every delivery on a single thread and that
//! parse is most of the client's work.

use std::borrow::Cow;

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

/// A Socket.IO event: its name and first argument.
#[derive(Deserialize)]
struct Event<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(default, borrow)] Option<&'a RawValue>);

#[derive(Deserialize)]
struct EventMessage<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

fn decode_socketio(text: &str) -> Inbound<'_> {
    match text.as_bytes() {
        [b'0', b'{', ..] => Inbound::Open,
        [b'1'] | [b'4', b'1', ..] => Inbound::Disconnect,
        [b'2'] => Inbound::EnginePing,
        [b'4', b'0', ..] => Inbound::Welcome { user: None },
        [b'4', b'2', ..] => decode_event(&text[2..]),
        _ => Inbound::Other,
    }
}

fn decode_event(text: &str) -> Inbound<'_> {
    let Ok(Event(name, arg)) = serde_json::from_str::<Event>(text) else {
        return Inbound::Other;
    };
    match (name.as_ref(), arg) {
        ("joined", Some(arg)) => match serde_json::from_str::<Cow<str>>(arg.get()) {
            Ok(room) => Inbound::Joined { room },
            Err(_) => Inbound::Other,
        },
        ("message", Some(arg)) => match serde_json::from_str::<EventMessage>(arg.get()) {
            Ok(msg) => Inbound::Message { room: msg.room, t: stamp(msg.data) },
            Err(_) => Inbound::Other,
        },
        _ => Inbound::Other,
    }
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

/// The first frame a Socket.IO client sends after engine.io's open packet.
pub const SOCKETIO_CONNECT: &str = "40";
/// The answer to engine.io's ping.
pub const SOCKETIO_PONG: &str = "3";

/// A join of `room`.
pub fn join(dialect: Dialect, room: &str) -> String {
    match dialect {
        Dialect::Herald => format!(r#"{{"type":"join","room":"{room}"}}"#),
        Dialect::Socketio => format!(r#"42["join","{room}"]"#),
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
        assert_eq!(join(Dialect::Socketio, "r"), r#"42["join","r"]"#);
    }
}
