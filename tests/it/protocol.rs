//! The wire protocol of PROTOCOL.md, frame by frame, against a real server over
//! real WebSockets: success replies, the reply rule, every reachable error
//! code, echo, `seq` ordering, presence counting and robustness to bad input.

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

#[tokio::test]
async fn errors_echo_string_and_integer_ids() {
    let (_server, mut alice) = alice_alone().await;
    let cases = [
        (json!({"type": "fly", "id": "x"}), "UNKNOWN_TYPE"), (json!({"type": "join", "room": "", "id": "q"}), "BAD_REQUEST"),
        (json!({"type": "publish", "room": "r", "data": 1, "id": 7}), "NOT_IN_ROOM"),
        (json!({"type": "join", "room": "user:bob", "id": -3}), "FORBIDDEN"),
    ];
    for (frame, code) in cases {
        let reply = expect_error(&mut alice, frame.clone(), &[code]).await;
        assert_eq!(reply["id"], frame["id"], "{frame} -> {reply}");
    }
}

#[tokio::test]
async fn errors_are_sent_to_frames_without_id() {
    let (_server, mut alice) = alice_alone().await;
    for frame in [json!({"type": "publish", "room": "r", "data": 1}), json!({"type": "typing", "room": "r", "typing": true})] {
        let reply = expect_error(&mut alice, frame, &["NOT_IN_ROOM"]).await;
        assert!(reply["id"].is_null(), "{reply}");
    }
    expect_error(&mut alice, json!({"type": "direct", "data": 1}), &["BAD_REQUEST"]).await;
}

#[tokio::test]
async fn ids_other_than_string_or_integer_are_bad_request() {
    let ids = [r#"{"type":"ping","id":1.5}"#, r#"{"type":"ping","id":true}"#, r#"{"type":"ping","id":{"a":1}}"#];
    assert_rejected(&ids, &["BAD_REQUEST"]).await;
}

#[tokio::test]
async fn invalid_json_is_invalid_json() {
    assert_rejected(&["{", "not json", r#"{"type":"ping""#, r#"{"type":'ping'}"#, ""], &["INVALID_JSON"]).await;
}

#[tokio::test]
async fn valid_json_that_is_not_an_object_is_rejected() {
    assert_rejected(&["[1,2]", "42", r#""ping""#, "null", "true"], &["BAD_REQUEST", "INVALID_JSON"]).await;
}

#[tokio::test]
async fn missing_or_non_string_type_is_rejected() {
    let texts = ["{}", r#"{"room":"r"}"#, r#"{"type":5}"#, r#"{"type":null}"#, r#"{"type":["ping"]}"#];
    assert_rejected(&texts, &["BAD_REQUEST", "UNKNOWN_TYPE"]).await;
}

#[tokio::test]
async fn unknown_type_is_unknown_type() {
    let texts = [r#"{"type":"fly"}"#, r#"{"type":"JOIN"}"#, r#"{"type":"message"}"#, r#"{"type":""}"#];
    assert_rejected(&texts, &["UNKNOWN_TYPE"]).await;
}

#[tokio::test]
async fn missing_or_wrong_typed_fields_are_bad_request() {
    let (_server, mut alice) = alice_alone().await;
    alice.join("r").await;
    for frame in [
        json!({"type": "join"}), json!({"type": "join", "room": 5}),
        json!({"type": "leave"}), json!({"type": "leave", "room": ["r"]}),
        json!({"type": "publish", "data": 1}), json!({"type": "publish", "room": "r"}),
        json!({"type": "publish", "room": "r", "data": 1, "echo": "no"}),
        json!({"type": "direct", "data": 1}), json!({"type": "direct", "to": 3, "data": 1}),
        json!({"type": "direct", "to": "bob"}), json!({"type": "direct", "to": "", "data": 1}),
        json!({"type": "typing", "room": "r"}), json!({"type": "typing", "room": "r", "typing": "yes"}),
        json!({"type": "presence"}), json!({"type": "presence", "room": null}),
        json!({"type": "status"}), json!({"type": "status", "users": "alice"}), json!({"type": "status", "users": [1]}),
    ] {
        expect_error(&mut alice, frame, &["BAD_REQUEST"]).await;
    }
}

#[tokio::test]
async fn bad_room_names_are_bad_request_for_every_frame_type() {
    let (_server, mut alice) = alice_alone().await;
    let too_long = "a".repeat(129);
    for room in ["", too_long.as_str(), "a b", "room/1", "#x", "caf\u{e9}", "a\nb", "*"] {
        for ty in ["join", "leave", "publish", "typing", "presence"] {
            let frame = json!({"type": ty, "room": room, "data": 1, "typing": true, "id": ty});
            let reply = expect_error(&mut alice, frame, &["BAD_REQUEST"]).await;
            assert_eq!(reply["id"], ty);
        }
    }
    alice.join(&"a".repeat(128)).await;
    alice.join("Az09_.:-").await;
}

#[tokio::test]
async fn field_checks_come_before_membership_checks() {
    let texts = [
        r#"{"type":"publish","room":"bad room","data":1}"#, r#"{"type":"publish","room":"r"}"#,
        r#"{"type":"publish","room":"r","data":1,"echo":1}"#,
        r#"{"type":"typing","room":"bad room","typing":true}"#, r#"{"type":"typing","room":"r"}"#,
    ];
    assert_rejected(&texts, &["BAD_REQUEST"]).await;
}

#[tokio::test]
async fn publish_and_typing_before_join_are_not_in_room() {
    let (_server, mut alice) = alice_alone().await;
    alice.join("other").await;
    expect_error(&mut alice, json!({"type": "publish", "room": "r", "data": 1, "id": 1}), &["NOT_IN_ROOM"]).await;
    expect_error(&mut alice, json!({"type": "typing", "room": "r", "typing": true, "id": 2}), &["NOT_IN_ROOM"]).await;
}

#[tokio::test]
async fn another_users_private_room_is_forbidden() {
    let (server, mut alice) = alice_alone().await;
    expect_error(&mut alice, json!({"type": "join", "room": "user:bob"}), &["FORBIDDEN"]).await;
    alice.join("user:alice").await;
    let (mut anon, _) = ws_connect(&server).await;
    expect_error(&mut anon, json!({"type": "join", "room": "user:alice"}), &["FORBIDDEN"]).await;
}

#[tokio::test]
async fn rooms_claim_limits_joins_to_its_patterns() {
    let server = server();
    let mut u = ws_connect_token(&server, &token("u", json!({"rooms": ["chat:*", "lobby"]}))).await;
    u.join("chat:general").await;
    u.join("lobby").await;
    for room in ["news", "chat", "lobby2", "xchat:1", "user:u"] {
        expect_error(&mut u, json!({"type": "join", "room": room}), &["FORBIDDEN"]).await;
    }
}

#[tokio::test]
async fn joining_more_rooms_than_the_limit_is_too_many_rooms() {
    let server = server_with(|c| c.limits.max_rooms_per_conn = 2);
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("a").await;
    alice.join("b").await;
    expect_error(&mut alice, json!({"type": "join", "room": "c", "id": 3}), &["TOO_MANY_ROOMS"]).await;
    alice.join("b").await;
    alice.request(json!({"type": "leave", "room": "a"})).await;
    alice.join("c").await;
    ws_connect_as(&server, "alice").await.join("a").await;
}

#[tokio::test]
async fn data_may_be_null_but_not_missing() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    publish(&mut alice, "r", Value::Null).await;
    let message = bob.recv().await;
    assert!(message.get("data").is_some_and(Value::is_null), "{message}");
    let ack = alice.request(json!({"type": "direct", "to": "bob", "data": null, "id": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let direct = bob.recv().await;
    assert!(direct.get("data").is_some_and(Value::is_null), "{direct}");
    expect_error(&mut alice, json!({"type": "publish", "room": "r"}), &["BAD_REQUEST"]).await;
    expect_error(&mut alice, json!({"type": "direct", "to": "bob"}), &["BAD_REQUEST"]).await;
}

#[tokio::test]
async fn unknown_extra_fields_are_ignored() {
    let (_server, mut alice) = alice_alone().await;
    let joined = alice.request(json!({"type": "join", "room": "r", "colour": "blue", "n": [1]})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let ack = alice.request(json!({"type": "publish", "room": "r", "data": 1, "echo": false, "id": 1, "x": {}})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(alice.request(json!({"type": "ping", "extra": null})).await["type"], "pong");
}

#[tokio::test]
async fn arbitrary_data_is_delivered_verbatim() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    let nested = (0..20).fold(json!("core"), |inner, i| json!({ "level": i, "inner": [inner] }));
    let samples = [
        json!(0), json!(-12.5e-3), json!(u64::MAX), json!(i64::MIN), json!(false), json!(""), json!([]), json!({}),
        json!("quote \" backslash \\ newline \n tab \t nul \u{0} emoji \u{1F600} \u{e9} \u{2028}"),
        json!([1, "a", null, true, {"k": [2.5, {"deep": null}]}]),
        json!({"type": "not a frame", "id": 9, "room": "elsewhere", "seq": -1}),
        nested,
    ];
    for data in samples {
        publish(&mut alice, "r", data.clone()).await;
        assert_eq!(bob.recv_type("message").await["data"], data);
        alice.send(json!({"type": "direct", "to": "bob", "data": data})).await;
        assert_eq!(bob.recv_type("direct").await["data"], data);
    }
}

#[tokio::test]
async fn echo_false_skips_only_the_sending_connection() {
    let server = server();
    let (mut tab1, mut tab2) = (ws_connect_as(&server, "alice").await, ws_connect_as(&server, "alice").await);
    let mut bob = ws_connect_as(&server, "bob").await;
    for c in [&mut tab1, &mut tab2, &mut bob] {
        c.join("r").await;
    }
    frames(&mut tab1).await;
    let ack = tab1.request(json!({"type": "publish", "room": "r", "data": "x", "echo": false, "id": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    tab1.expect_silence(QUIET).await;
    assert_eq!(tab2.recv_type("message").await["data"], "x");
    assert_eq!(bob.recv_type("message").await["data"], "x");
}

#[tokio::test]
async fn echo_defaults_to_true() {
    let (_server, mut alice) = alice_alone().await;
    alice.join("r").await;
    alice.send(json!({"type": "publish", "room": "r", "data": "mine"})).await;
    let message = alice.recv().await;
    assert_eq!((&message["type"], &message["data"]), (&json!("message"), &json!("mine")), "{message}");
    alice.send(json!({"type": "publish", "room": "r", "data": "again", "echo": true})).await;
    assert_eq!(alice.recv().await["data"], "again");
}

#[tokio::test]
async fn seq_starts_at_one_and_counts_each_room_on_its_own() {
    let server = server();
    let (mut alice, mut bob) = pair(&server, "a").await;
    alice.join("b").await;
    let mut seqs = Vec::new();
    for (room, data) in [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5)] {
        seqs.push(publish(&mut alice, room, json!(data)).await);
    }
    assert_eq!(seqs, [1, 2, 1, 3, 2]);
    for (seq, data) in [(1, 1), (2, 2), (3, 4)] {
        let message = bob.recv().await;
        assert_eq!((&message["seq"], &message["data"]), (&json!(seq), &json!(data)), "{message}");
    }
}

/// Publishes `count` numbered messages to `busy` without echo and without waiting.
async fn burst(client: &mut Client, name: &str, count: u64) {
    for n in 0..count {
        client.send(json!({"type": "publish", "room": "busy", "data": [name, n], "echo": false})).await;
    }
}

#[tokio::test]
async fn publishes_from_two_clients_arrive_in_seq_order_without_gaps() {
    const EACH: u64 = 100;
    let server = server();
    let (mut p1, mut p2) = (ws_connect_as(&server, "p1").await, ws_connect_as(&server, "p2").await);
    let mut watcher = ws_connect_as(&server, "watcher").await;
    for c in [&mut watcher, &mut p1, &mut p2] {
        c.join("busy").await;
    }
    tokio::join!(burst(&mut p1, "p1", EACH), burst(&mut p2, "p2", EACH));
    let mut next = [0u64, 0u64];
    for expected in 1..=2 * EACH {
        let message = watcher.recv_type("message").await;
        assert_eq!(message["seq"], expected, "{message}");
        let who = usize::from(message["from"] == "p2");
        assert_eq!(message["data"], json!([message["from"], next[who]]), "each sender's order is kept");
        next[who] += 1;
    }
    watcher.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_user_with_three_connections_is_one_user() {
    let server = server();
    let (mut bob, carol) = (ws_connect_as(&server, "bob").await, ws_connect_as(&server, "carol").await);
    bob.join("r").await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = ws_connect_as(&server, "alice").await;
        assert_eq!(users(&tab.join("r").await), set(&["alice", "bob"]));
        tabs.push(tab);
    }
    assert_eq!(bob.recv().await, json!({"type": "user_joined", "room": "r", "user": "alice"}));
    bob.expect_silence(QUIET).await;
    let carol = &Mutex::new(carol);
    assert_eq!(presence(&mut *carol.lock().await, "r").await, set(&["alice", "bob"]));

    let left = tabs[0].request(json!({"type": "leave", "room": "r"})).await;
    assert_eq!(left["type"], "left", "{left}");
    tabs.remove(1).close().await;
    bob.expect_silence(QUIET).await;
    assert_eq!(presence(&mut *carol.lock().await, "r").await, set(&["alice", "bob"]));

    tabs.remove(1).close().await;
    assert_eq!(bob.recv().await, json!({"type": "user_left", "room": "r", "user": "alice"}));
    bob.expect_silence(QUIET).await;
    let gone = eventually(WAIT, move || async move { presence(&mut *carol.lock().await, "r").await == set(&["bob"]) });
    assert!(gone.await, "alice stays in presence after her last connection left");
}

#[tokio::test]
async fn closing_a_connection_leaves_every_room_it_was_in() {
    let server = server();
    let (mut bob, mut carol) = (ws_connect_as(&server, "bob").await, ws_connect_as(&server, "carol").await);
    bob.join("one").await;
    carol.join("two").await;
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("one").await;
    alice.join("two").await;
    bob.recv_type("user_joined").await;
    carol.recv_type("user_joined").await;
    drop(alice); // the TCP connection ends without a close handshake
    assert_eq!(bob.recv().await, json!({"type": "user_left", "room": "one", "user": "alice"}));
    assert_eq!(carol.recv().await, json!({"type": "user_left", "room": "two", "user": "alice"}));
    let bob = &Mutex::new(bob);
    let offline = eventually(WAIT, move || async move {
        let mut bob = bob.lock().await;
        !online(&mut bob, "alice").await && presence(&mut bob, "two").await == set(&["carol"])
    });
    assert!(offline.await, "alice is still online or still in room two");
}

#[tokio::test]
async fn status_follows_connections() {
    let server = server();
    let watcher = &Mutex::new(ws_connect_as(&server, "watcher").await);
    let is_online = move |expected: bool| move || async move { online(&mut *watcher.lock().await, "alice").await == expected };
    assert!(!online(&mut *watcher.lock().await, "alice").await);
    let tab1 = ws_connect_as(&server, "alice").await;
    let tab2 = ws_connect_as(&server, "alice").await;
    assert!(eventually(WAIT, is_online(true)).await, "alice is online with two connections");
    tab1.close().await;
    watcher.lock().await.expect_silence(QUIET).await;
    assert!(online(&mut *watcher.lock().await, "alice").await, "alice is online while one connection is open");
    tab2.close().await;
    assert!(eventually(WAIT, is_online(false)).await, "alice is offline once every connection closed");
}

#[tokio::test]
async fn joining_twice_sends_no_second_user_joined() {
    let (_server, mut alice, mut bob) = pair_alone("r").await;
    let again = bob.request(json!({"type": "join", "room": "r"})).await;
    match again["type"].as_str() {
        Some("joined") => assert_eq!(users(&again), set(&["alice", "bob"])),
        Some("error") => {}
        _ => panic!("second join answered {again}"),
    }
    alice.expect_silence(QUIET).await;
    assert_eq!(presence(&mut alice, "r").await, set(&["alice", "bob"]));
}

#[tokio::test]
async fn leaving_a_room_not_joined_is_left_or_not_in_room() {
    let (_server, mut alice) = alice_alone().await;
    let reply = alice.request(json!({"type": "leave", "room": "never", "id": 1})).await;
    match reply["type"].as_str() {
        Some("left") => assert_eq!(reply["room"], "never"),
        Some("error") => assert_eq!(reply["code"], "NOT_IN_ROOM"),
        _ => panic!("leave of a room not joined answered {reply}"),
    }
    assert_eq!(reply["id"], 1);
}

#[tokio::test]
async fn binary_frames_are_bad_request() {
    let (_server, mut alice) = alice_alone().await;
    alice.send_message(Message::Binary(br#"{"type":"ping"}"#.to_vec().into())).await;
    assert_error(&alice.recv().await, &["BAD_REQUEST"], "binary frame");
    assert_eq!(alice.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn malformed_input_never_kills_the_server() {
    let server = server_with(|c| c.limits.max_message_bytes = 1 << 20);
    let (mut bad, _) = ws_connect(&server).await;
    bad.join("r").await;
    let open = "[".repeat(100_000);
    let closed = format!("{open}{}", "]".repeat(100_000));
    let in_field = format!(r#"{{"type":"join","room":{closed}}}"#);
    let in_id = format!(r#"{{"type":"ping","id":{closed}}}"#);
    let texts = [
        "{", "}", "nope", "\u{0}", "[[[", &open, &closed, &in_field, &in_id,
        r#"{"type":"ping","id":1e999}"#, r#"{"type":"ping","type":"join"}"#, "{\"type\":\"ping\"\u{0}}",
    ];
    for text in texts {
        bad.send_text(text).await;
        let reply = bad.recv().await;
        assert_eq!(reply["type"], "error", "{} -> {reply}", &text[..text.len().min(60)]);
    }
    for _ in 0..10 {
        bad.send_message(Message::Binary(vec![0xff; 100].into())).await;
        assert_error(&bad.recv().await, &["BAD_REQUEST"], "binary frame");
    }
    // Deeply nested `data` may be refused or delivered; either way the connection lives.
    bad.send_text(&format!(r#"{{"type":"publish","room":"r","data":{closed},"id":"deep","echo":false}}"#)).await;
    let reply = bad.recv().await;
    assert!(reply["type"] == "ack" || reply["type"] == "error", "deep data -> {:?}", reply.get("type"));

    assert_eq!(bad.request(json!({"type": "ping", "id": 1})).await, json!({"type": "pong", "id": 1}));
    let mut good = ws_connect_as(&server, "good").await;
    good.join("r").await;
    bad.recv_type("user_joined").await;
    publish(&mut good, "r", json!("still here")).await;
    assert_eq!(bad.recv_type("message").await["data"], "still here");
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_with_1009() {
    let server = server_with(|c| c.limits.max_message_bytes = 1024);
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("r").await;
    publish(&mut alice, "r", json!("x".repeat(900))).await;
    alice.send(json!({"type": "publish", "room": "r", "data": "x".repeat(2000)})).await;
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1009);
    let mut other = ws_connect_as(&server, "bob").await;
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
}
