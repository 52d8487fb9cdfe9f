//! Every reachable error code, with and without `id`, and what is checked first.

use super::*;

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
    for room in ["news", "chat", "lobby2", "xchat:1", "user:v"] {
        expect_error(&mut u, json!({"type": "join", "room": room}), &["FORBIDDEN"]).await;
    }
    u.join("user:u").await;
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
