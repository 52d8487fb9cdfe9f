//! Authentication end to end: every way a token can arrive (header, `?token=`,
//! `auth` frame), their precedence, every auth close code and reason, the
//! anonymous mode, and the room permissions a token carries.

use crate::support::*;

use std::time::Duration;

use serde_json::{json, Value};

/// A token for `alice` signed with the wrong secret.
fn wrong_secret_token() -> String {
    token_with(json!({"sub": "alice"}), json!({}), "not-the-secret")
}

/// A token for `alice` whose `exp` is a minute in the past.
fn expired_token() -> String {
    let exp = herald::protocol::now_ms() / 1000 - 60;
    token_with(json!({"sub": "alice", "exp": exp}), json!({}), SECRET)
}

/// Every kind of bad token, named for the failure messages.
fn bad_tokens() -> Vec<(&'static str, String)> {
    vec![
        ("wrong secret", wrong_secret_token()),
        ("expired", expired_token()),
        ("garbage", "not.a.jwt".to_owned()),
    ]
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn url_with_token(server: &TestServer, token: &str) -> String {
    format!("{}?token={token}", server.ws_url())
}

/// Reads the first frame and checks it is a `welcome` for `user` (`Value::Null` while pending).
async fn expect_welcome(client: &mut Client, user: Value) -> Value {
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "welcome is the first frame: {welcome}");
    assert_eq!(welcome["user"], user, "{welcome}");
    assert!(welcome["conn"].is_string() || welcome["conn"].is_u64(), "conn is an id: {welcome}");
    assert_eq!(welcome["node"], "test", "{welcome}");
    assert!(welcome["heartbeat_ms"].is_u64(), "{welcome}");
    welcome
}

/// The connection must close 4002 "invalid token"; a `welcome` before it is allowed.
async fn expect_invalid_token(client: &mut Client, what: &str) {
    let close = client.expect_close().await;
    assert_eq!(close, (4002, "invalid token".to_owned()), "{what}");
}

/// The connection stays usable: a `ping` gets its `pong`.
async fn expect_served(client: &mut Client) {
    let pong = client.request(json!({"type": "ping", "id": "alive"})).await;
    assert_eq!(pong, json!({"type": "pong", "id": "alive"}));
}

/// The `id` of `welcome.conn` as text, whether the server sends it as a string or a number.
fn conn_text(welcome: &Value) -> String {
    match &welcome["conn"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- token sources -------------------------------------------------------

#[tokio::test]
async fn header_token_authenticates_at_the_handshake() {
    let server = start(config_auth_required());
    let token = token("alice", json!({}));
    let mut client = ws_connect_raw(&server.ws_url(), &[("authorization", &bearer(&token))]).await;
    expect_welcome(&mut client, json!("alice")).await;
    // Longer than auth.timeout_ms: an authenticated connection is not timed out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_served(&mut client).await;
}

#[tokio::test]
async fn query_token_authenticates_at_the_handshake() {
    let server = start(config_auth_required());
    let mut client = ws_connect_raw(&url_with_token(&server, &token("alice", json!({}))), &[]).await;
    expect_welcome(&mut client, json!("alice")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_served(&mut client).await;
}

#[tokio::test]
async fn auth_frame_authenticates_and_echoes_its_id() {
    let server = start(config_auth_required());
    for id in [json!("a1"), json!(7)] {
        let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
        expect_welcome(&mut client, Value::Null).await;
        let authed = client.request(json!({"type": "auth", "token": token("alice", json!({})), "id": id})).await;
        assert_eq!(authed, json!({"type": "authed", "user": "alice", "id": id}));
        tokio::time::sleep(Duration::from_millis(500)).await;
        expect_served(&mut client).await;
    }
}

#[tokio::test]
async fn auth_frame_without_id_still_gets_authed() {
    let server = start(config_auth_required());
    let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
    expect_welcome(&mut client, Value::Null).await;
    let authed = client.request(json!({"type": "auth", "token": token("bob", json!({}))})).await;
    assert_eq!(authed, json!({"type": "authed", "user": "bob"}));
    let joined = client.join("lobby").await;
    assert_eq!(joined["users"], json!(["bob"]));
}

#[tokio::test]
async fn welcome_carries_a_distinct_conn_the_node_and_the_heartbeat() {
    let mut config = config_auth_required();
    config.heartbeat.interval_ms = 1234;
    let server = start(config);
    let mut a = ws_connect_raw(&url_with_token(&server, &token("alice", json!({}))), &[]).await;
    let mut b = ws_connect_raw(&url_with_token(&server, &token("alice", json!({}))), &[]).await;
    let wa = expect_welcome(&mut a, json!("alice")).await;
    let wb = expect_welcome(&mut b, json!("alice")).await;
    assert_ne!(wa["conn"], wb["conn"], "each connection has its own id");
    assert_eq!(wa["heartbeat_ms"], 1234);
}

// ---- precedence ----------------------------------------------------------

#[tokio::test]
async fn bad_header_token_wins_over_a_good_query_token() {
    for required in [true, false] {
        let server = start(if required { config_auth_required() } else { config() });
        let url = url_with_token(&server, &token("alice", json!({})));
        let mut client = ws_connect_raw(&url, &[("authorization", "Bearer garbage")]).await;
        expect_invalid_token(&mut client, &format!("auth.required = {required}")).await;
    }
}

#[tokio::test]
async fn good_header_token_wins_over_a_bad_query_token() {
    let server = start(config_auth_required());
    let url = url_with_token(&server, "garbage");
    let mut client = ws_connect_raw(&url, &[("authorization", &bearer(&token("alice", json!({}))))]).await;
    expect_welcome(&mut client, json!("alice")).await;
    expect_served(&mut client).await;
}

// ---- bad tokens ----------------------------------------------------------

#[tokio::test]
async fn bad_handshake_tokens_close_with_4002() {
    for required in [true, false] {
        let server = start(if required { config_auth_required() } else { config() });
        for (what, bad) in bad_tokens() {
            let mut client = ws_connect_raw(&server.ws_url(), &[("authorization", &bearer(&bad))]).await;
            expect_invalid_token(&mut client, &format!("{what} in header, required = {required}")).await;
            let mut client = ws_connect_raw(&url_with_token(&server, &bad), &[]).await;
            expect_invalid_token(&mut client, &format!("{what} in ?token=, required = {required}")).await;
        }
    }
}

#[tokio::test]
async fn bad_auth_frame_tokens_close_with_4002() {
    for required in [true, false] {
        let server = start(if required { config_auth_required() } else { config() });
        for (what, bad) in bad_tokens() {
            let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
            client.recv_type("welcome").await;
            client.send(json!({"type": "auth", "token": bad, "id": 1})).await;
            expect_invalid_token(&mut client, &format!("{what} in auth frame, required = {required}")).await;
        }
    }
}

#[tokio::test]
async fn expired_token_in_an_auth_frame_closes_with_4002() {
    let server = start(config_auth_required());
    let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
    expect_welcome(&mut client, Value::Null).await;
    client.send(json!({"type": "auth", "token": expired_token()})).await;
    expect_invalid_token(&mut client, "expired token in auth frame").await;
}

#[tokio::test]
async fn auth_frame_with_a_missing_token_closes_with_4002() {
    for required in [true, false] {
        let server = start(if required { config_auth_required() } else { config() });
        let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
        client.recv_type("welcome").await;
        client.send(json!({"type": "auth", "id": "x"})).await;
        expect_invalid_token(&mut client, &format!("missing token, required = {required}")).await;
    }
}

#[tokio::test]
async fn auth_frame_with_a_non_string_token_closes_with_4002() {
    for required in [true, false] {
        let server = start(if required { config_auth_required() } else { config() });
        for bad in [json!(5), json!(null), json!({"jwt": "x"}), json!(["x"]), json!(true)] {
            let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
            client.recv_type("welcome").await;
            client.send(json!({"type": "auth", "token": bad})).await;
            expect_invalid_token(&mut client, &format!("token {bad}, required = {required}")).await;
        }
    }
}

// ---- auth.required = true ------------------------------------------------

#[tokio::test]
async fn no_auth_within_the_timeout_closes_with_4001() {
    let server = start(config_auth_required());
    let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
    expect_welcome(&mut client, Value::Null).await;
    let close = client.expect_close().await;
    assert_eq!(close, (4001, "authentication timeout".to_owned()));
}

#[tokio::test]
async fn any_frame_before_auth_closes_with_4003() {
    let server = start(config_auth_required());
    let frames = [
        json!({"type": "join", "room": "lobby"}).to_string(),
        json!({"type": "ping"}).to_string(),
        json!({"type": "ping", "id": 1}).to_string(),
        json!({"type": "publish", "room": "lobby", "data": 1}).to_string(),
        json!({"type": "status", "users": ["alice"]}).to_string(),
        json!({"type": "no_such_type"}).to_string(),
        "{not json".to_owned(),
    ];
    for frame in frames {
        let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
        expect_welcome(&mut client, Value::Null).await;
        client.send_text(&frame).await;
        let close = client.expect_close().await;
        assert_eq!(close, (4003, "not authenticated".to_owned()), "after {frame}");
    }
}

// ---- auth.required = false -----------------------------------------------

#[tokio::test]
async fn anonymous_user_is_anon_colon_conn() {
    let server = start(config());
    let (mut client, welcome) = ws_connect(&server).await;
    let anon = format!("anon:{}", conn_text(&welcome));
    assert_eq!(welcome["user"], json!(anon), "{welcome}");
    assert_eq!(welcome["node"], "test");
    let joined = client.join("lobby").await;
    assert_eq!(joined["users"], json!([anon]));
}

#[tokio::test]
async fn anonymous_connection_may_auth_and_becomes_that_user() {
    let server = start(config());
    let mut watcher = ws_connect_as(&server, "watcher").await;
    let status = watcher.request(json!({"type": "status", "users": ["alice"]})).await;
    assert_eq!(status["online"], json!({"alice": false}), "{status}");

    let (mut client, welcome) = ws_connect(&server).await;
    let anon = format!("anon:{}", conn_text(&welcome));
    let authed = client.request(json!({"type": "auth", "token": token("alice", json!({})), "id": "up"})).await;
    assert_eq!(authed, json!({"type": "authed", "user": "alice", "id": "up"}));

    // Presence is updated asynchronously: ask again until it shows, within WAIT.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = watcher.request(json!({"type": "status", "users": ["alice"]})).await;
        if status["online"] == json!({"alice": true}) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "alice is online after authenticating: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = watcher.request(json!({"type": "status", "users": [anon]})).await;
    assert_eq!(status["online"][&anon], false, "the anonymous id is gone: {status}");

    let joined = client.join("lobby").await;
    assert_eq!(joined["users"], json!(["alice"]), "joins as alice, not as {anon}");
}

// ---- the rooms claim -----------------------------------------------------

/// Sends a join with an id and returns the reply.
async fn try_join(client: &mut Client, room: &str) -> Value {
    client.request(json!({"type": "join", "room": room, "id": room})).await
}

async fn expect_joined(client: &mut Client, room: &str) {
    let reply = try_join(client, room).await;
    assert_eq!(reply["type"], "joined", "{room} is allowed: {reply}");
    assert_eq!(reply["room"], room);
    assert_eq!(reply["id"], room);
}

async fn expect_forbidden(client: &mut Client, room: &str) {
    let reply = try_join(client, room).await;
    assert_eq!(reply["type"], "error", "{room} is not allowed: {reply}");
    assert_eq!(reply["code"], "FORBIDDEN", "{reply}");
    assert_eq!(reply["id"], room, "{reply}");
}

#[tokio::test]
async fn rooms_claim_limits_joins_to_its_patterns() {
    let server = start(config());
    let mut alice = ws_connect_token(&server, &token("alice", json!({"rooms": ["chat:*", "lobby"]}))).await;
    for room in ["chat:x", "chat:general", "chat:", "lobby", "user:alice"] {
        expect_joined(&mut alice, room).await;
    }
    for room in ["lobby2", "xlobby", "chat", "other", "user:bob"] {
        expect_forbidden(&mut alice, room).await;
    }
}

#[tokio::test]
async fn without_a_rooms_claim_only_other_users_rooms_are_forbidden() {
    let server = start(config());
    let mut alice = ws_connect_as(&server, "alice").await;
    for room in ["user:alice", "lobby", "chat:x"] {
        expect_joined(&mut alice, room).await;
    }
    for room in ["user:bob", "user:alice2", "user:"] {
        expect_forbidden(&mut alice, room).await;
    }
}

#[tokio::test]
async fn rooms_claim_replaces_the_default_rule_but_never_opens_another_users_room() {
    let server = start(config());
    let mut alice = ws_connect_token(&server, &token("alice", json!({"rooms": ["user:*"]}))).await;
    expect_forbidden(&mut alice, "user:bob").await;
    expect_joined(&mut alice, "user:alice").await;
    expect_forbidden(&mut alice, "lobby").await;
}

#[tokio::test]
async fn rooms_claim_applies_to_a_token_from_an_auth_frame() {
    let server = start(config_auth_required());
    let mut alice = ws_connect_raw(&server.ws_url(), &[]).await;
    expect_welcome(&mut alice, Value::Null).await;
    let authed = alice.request(json!({"type": "auth", "token": token("alice", json!({"rooms": ["lobby"]}))})).await;
    assert_eq!(authed["type"], "authed", "{authed}");
    expect_joined(&mut alice, "lobby").await;
    expect_forbidden(&mut alice, "chat:x").await;
}
