//! The wire protocol of PROTOCOL.md, frame by frame, against a real server over
//! real WebSockets: here the success replies and the reply rule, and the
//! fixtures the other parts share; [`errors`] every reachable error code,
//! [`delivery`] data, echo and `seq` ordering, [`users`] presence counted by
//! user, [`robustness`] bad input on the wire.

mod delivery;
mod errors;
mod robustness;
mod users;

use crate::support::*;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(200);

/// A server whose rate limits sit far above what these tests send, so that a
/// protocol test never measures rate limiting.
fn server_with(edit: impl FnOnce(&mut herald::Config)) -> TestServer {
    let mut config = config();
    config.limits.rate_per_sec = 100_000;
    config.limits.rate_burst = 100_000;
    edit(&mut config);
    start(config)
}

fn server() -> TestServer {
    server_with(|_| {})
}

/// A fresh server and one client on it, connected as `alice`.
async fn alice_alone() -> (TestServer, Client) {
    let server = server();
    let alice = ws_connect_as(&server, "alice").await;
    (server, alice)
}

/// A fresh server with Alice and Bob both in `room` on it, as [`pair`] leaves them.
async fn pair_alone(room: &str) -> (TestServer, Client, Client) {
    let server = server();
    let (alice, bob) = pair(&server, room).await;
    (server, alice, bob)
}

/// Alice and Bob both in `room`, with Alice's `user_joined` for Bob read.
async fn pair(server: &TestServer, room: &str) -> (Client, Client) {
    let (mut alice, mut bob) = (ws_connect_as(server, "alice").await, ws_connect_as(server, "bob").await);
    alice.join(room).await;
    bob.join(room).await;
    assert_eq!(alice.recv().await, json!({"type": "user_joined", "room": room, "user": "bob"}));
    (alice, bob)
}

/// The frames up to the one whose `id` is `id`, however long the server
/// takes to send it, then any that follow within [`QUIET`].
async fn frames_through_reply(client: &mut Client, id: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match client.next_event().await {
            Event::Frame(frame) => {
                let reply = frame.get("id") == Some(id);
                out.push(frame);
                if reply {
                    break;
                }
            }
            Event::Closed(close) => panic!("connection closed: {close:?} after {out:?}"),
        }
    }
    out.extend(frames(client).await);
    out
}

/// Every frame that arrives until `QUIET` passes without one.
async fn frames(client: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(event) = client.next_event_within(QUIET).await {
        match event {
            Event::Frame(frame) => out.push(frame),
            Event::Closed(close) => panic!("connection closed: {close:?} after {out:?}"),
        }
    }
    out
}

/// Asserts that `reply` is an `error` whose code is one of `codes`.
fn assert_error(reply: &Value, codes: &[&str], what: &str) {
    assert_eq!(reply["type"], "error", "{what} -> {reply}");
    assert!(codes.iter().any(|c| reply["code"] == *c), "{what} -> {reply}, expected one of {codes:?}");
    assert!(reply["message"].is_string(), "{what} -> {reply}");
}

/// Sends `frame` and asserts the reply is an error with one of `codes`.
async fn expect_error(client: &mut Client, frame: Value, codes: &[&str]) -> Value {
    let reply = client.request(frame.clone()).await;
    assert_error(&reply, codes, &frame.to_string());
    reply
}

/// Sends raw `text` and asserts the reply is an error with one of `codes`.
async fn expect_text_error(client: &mut Client, text: &str, codes: &[&str]) {
    client.send_text(text).await;
    let reply = client.recv().await;
    assert_error(&reply, codes, &text.chars().take(60).collect::<String>());
}

/// Sends each text on one connection; each must get an error with one of `codes`.
async fn assert_rejected(texts: &[&str], codes: &[&str]) {
    let (_server, mut alice) = alice_alone().await;
    for text in texts {
        expect_text_error(&mut alice, text, codes).await;
    }
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

/// Publishes without echo and returns the acked `seq`, skipping other frames.
async fn publish(client: &mut Client, room: &str, data: Value) -> u64 {
    client.send(json!({"type": "publish", "room": room, "data": data, "echo": false, "id": "p"})).await;
    let ack = loop {
        let frame = client.recv().await;
        if frame["id"] == "p" {
            break frame;
        }
    };
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap_or_else(|| panic!("ack without an integer seq: {ack}"))
}

/// The `users` of a `joined` or `presence` frame, checking each is listed once.
fn users(frame: &Value) -> BTreeSet<String> {
    let list = frame["users"].as_array().unwrap_or_else(|| panic!("no users list: {frame}"));
    let set: BTreeSet<String> = list.iter().map(|u| u.as_str().expect("user ids are strings").to_owned()).collect();
    assert_eq!(set.len(), list.len(), "users are listed once each: {frame}");
    set
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn presence(client: &mut Client, room: &str) -> BTreeSet<String> {
    let reply = client.request(json!({"type": "presence", "room": room})).await;
    assert_eq!((&reply["type"], &reply["room"]), (&json!("presence"), &json!(room)), "{reply}");
    users(&reply)
}

/// Whether `user` is online per a `status` frame; a user left out counts as offline.
async fn online(client: &mut Client, user: &str) -> bool {
    let reply = client.request(json!({"type": "status", "users": [user]})).await;
    assert_eq!(reply["type"], "status", "{reply}");
    reply["online"].get(user).and_then(Value::as_bool).unwrap_or(false)
}

/// Asserts `ts` is a plausible ms-since-epoch timestamp of a frame sent just now.
fn assert_recent(frame: &Value) {
    let ts = frame["ts"].as_u64().unwrap_or_else(|| panic!("ts is not an integer: {frame}"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(ts + 60_000 > now && ts < now + 60_000, "ts {ts} is not near now {now}: {frame}");
}

#[tokio::test]
async fn join_replies_joined_with_users_including_self_and_tells_others() {
    let (server, mut alice) = alice_alone().await;
    let joined = alice.join("lobby").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(users(&joined), set(&["alice"]));
    let mut bob = ws_connect_as(&server, "bob").await;
    assert_eq!(users(&bob.join("lobby").await), set(&["alice", "bob"]));
    assert_eq!(alice.recv().await, json!({"type": "user_joined", "room": "lobby", "user": "bob"}));
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn leave_replies_left_and_others_get_user_left() {
    let (_server, mut alice, mut bob) = pair_alone("lobby").await;
    let left = bob.request(json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!((&left["type"], &left["room"]), (&json!("left"), &json!("lobby")), "{left}");
    assert_eq!(alice.recv().await, json!({"type": "user_left", "room": "lobby", "user": "bob"}));
    expect_error(&mut bob, json!({"type": "publish", "room": "lobby", "data": 1}), &["NOT_IN_ROOM"]).await;
}

#[tokio::test]
async fn publish_acks_seq_and_delivers_a_message_with_every_field() {
    let (_server, mut alice, mut bob) = pair_alone("news").await;
    alice.send(json!({"type": "publish", "room": "news", "data": {"text": "hi"}, "id": 1})).await;
    let got = frames_through_reply(&mut alice, &json!(1)).await;
    let ack = got.iter().find(|f| f["type"] == "ack").unwrap_or_else(|| panic!("no ack in {got:?}"));
    assert_eq!((&ack["seq"], &ack["id"]), (&json!(1), &json!(1)), "{ack}");
    let message = bob.recv().await;
    assert_eq!((&message["type"], &message["room"]), (&json!("message"), &json!("news")), "{message}");
    assert_eq!((&message["from"], &message["seq"]), (&json!("alice"), &json!(1)), "{message}");
    assert_eq!(message["data"], json!({"text": "hi"}));
    assert_recent(&message);
    assert!(got.contains(&message), "the sender gets the same message by default: {got:?}");
}

#[tokio::test]
async fn direct_acks_and_reaches_every_connection_of_the_target() {
    let (server, mut alice) = alice_alone().await;
    let (mut bob1, mut bob2) = (ws_connect_as(&server, "bob").await, ws_connect_as(&server, "bob").await);
    let mut carol = ws_connect_as(&server, "carol").await;
    let ack = alice.request(json!({"type": "direct", "to": "bob", "data": [1, "two"], "id": "d"})).await;
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!("d")), "{ack}");
    for bob in [&mut bob1, &mut bob2] {
        let direct = bob.recv().await;
        assert_eq!((&direct["type"], &direct["from"]), (&json!("direct"), &json!("alice")), "{direct}");
        assert_eq!(direct["data"], json!([1, "two"]));
        assert_recent(&direct);
    }
    carol.expect_silence(QUIET).await;
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn typing_reaches_other_members_but_not_the_sender() {
    let (_server, mut alice, mut bob) = pair_alone("chat").await;
    let ack = alice.request(json!({"type": "typing", "room": "chat", "typing": true, "id": 5})).await;
    assert_eq!(ack, json!({"type": "ack", "id": 5}));
    assert_eq!(bob.recv().await, json!({"type": "typing", "room": "chat", "user": "alice", "typing": true}));
    alice.send(json!({"type": "typing", "room": "chat", "typing": false})).await;
    assert_eq!(bob.recv().await, json!({"type": "typing", "room": "chat", "user": "alice", "typing": false}));
    alice.expect_silence(QUIET).await;
}

#[tokio::test]
async fn presence_lists_a_rooms_users_without_membership() {
    let server = server();
    let _members = pair(&server, "r").await;
    let mut carol = ws_connect_as(&server, "carol").await;
    assert_eq!(presence(&mut carol, "r").await, set(&["alice", "bob"]));
    assert_eq!(presence(&mut carol, "empty").await, set(&[]));
}

#[tokio::test]
async fn status_reports_who_is_online() {
    let (_server, mut alice) = alice_alone().await;
    let reply = alice.request(json!({"type": "status", "users": ["alice", "nobody"]})).await;
    assert_eq!(reply["type"], "status", "{reply}");
    assert_eq!(reply["online"]["alice"], true, "{reply}");
    assert_ne!(reply["online"]["nobody"], true, "{reply}");
}

#[tokio::test]
async fn ping_gets_pong() {
    let (_server, mut alice) = alice_alone().await;
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

/// Sends one frame of every type with `id`; each gets exactly one reply echoing it.
async fn assert_one_reply_per_frame(id: Value) {
    let (_server, mut alice) = alice_alone().await;
    let cases = [
        (json!({"type": "join", "room": "r"}), "joined"), (json!({"type": "presence", "room": "r"}), "presence"),
        (json!({"type": "status", "users": ["alice"]}), "status"), (json!({"type": "ping"}), "pong"),
        (json!({"type": "publish", "room": "r", "data": 1}), "ack"),
        (json!({"type": "typing", "room": "r", "typing": true}), "ack"),
        (json!({"type": "direct", "to": "bob", "data": 1}), "ack"), (json!({"type": "leave", "room": "r"}), "left"),
        (json!({"type": "no_such_type"}), "error"), (json!({"type": "publish", "room": "r", "data": 1}), "error"),
    ];
    for (mut frame, ty) in cases {
        frame["id"] = id.clone();
        alice.send(frame.clone()).await;
        let got = frames_through_reply(&mut alice, &id).await;
        let replies: Vec<_> = got.iter().filter(|f| f.get("id") == Some(&id)).collect();
        assert_eq!(replies.len(), 1, "{frame} -> {got:?}");
        assert_eq!(replies[0]["type"], ty, "{frame} -> {got:?}");
    }
}

#[tokio::test]
async fn every_frame_with_a_string_id_gets_exactly_one_reply_echoing_it() {
    assert_one_reply_per_frame(json!("req \"1\" \u{e9}")).await;
}

#[tokio::test]
async fn every_frame_with_an_integer_id_gets_exactly_one_reply_echoing_it() {
    assert_one_reply_per_frame(json!(42)).await;
}

#[tokio::test]
async fn join_leave_presence_status_ping_without_id_still_get_their_reply() {
    let (_server, mut alice) = alice_alone().await;
    let cases = [
        (json!({"type": "join", "room": "r"}), "joined"), (json!({"type": "presence", "room": "r"}), "presence"),
        (json!({"type": "status", "users": ["alice"]}), "status"), (json!({"type": "ping"}), "pong"),
        (json!({"type": "leave", "room": "r"}), "left"),
    ];
    for (frame, ty) in cases {
        let reply = alice.request(frame.clone()).await;
        assert_eq!(reply["type"], ty, "{frame} -> {reply}");
        assert!(reply["id"].is_null(), "{frame} -> {reply}");
        alice.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn publish_direct_typing_without_id_get_no_reply_but_take_effect() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    alice.send(json!({"type": "publish", "room": "r", "data": "m", "echo": false})).await;
    assert_eq!(bob.recv().await["type"], "message");
    alice.send(json!({"type": "direct", "to": "bob", "data": "d"})).await;
    assert_eq!(bob.recv().await["type"], "direct");
    alice.send(json!({"type": "typing", "room": "r", "typing": true})).await;
    assert_eq!(bob.recv().await["type"], "typing");
    alice.expect_silence(QUIET).await;
}
