//! What a hostile client can do, tried from outside over real sockets:
//! tokens that reach for other users' rooms or keep rooms after their
//! claims narrow, subjects made to be mistaken, rooms made by the hundred,
//! and presence asked for in a loop. Each test checks that the offender gets
//! the documented answer, that other clients are still served, and, where
//! the load could hold memory, that the server's RSS stays within a bound
//! stated in the test.

use crate::support::*;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

const API_KEY: &str = "abuse-key";

/// The `herald` binary with `limits` as its `[limits]` table, the API key
/// set, and freed memory given back at once, so that RSS follows what it
/// holds.
async fn herald_with(limits: &str) -> Herald {
    let toml = format!(
        "[server]\nworkers = 1\n[auth]\njwt_secret = \"{SECRET}\"\n[api]\nkey = \"{API_KEY}\"\n[limits]\n{limits}"
    );
    HeraldCommand::new().config(&toml).env("MIMALLOC_PURGE_DELAY", "0").start().await
}

/// The rate limit lifted, for loads that are many frames by design.
const UNLIMITED: &str = "rate_per_sec = 100000\nrate_burst = 100000\n";

/// What a test lets a load add to the server's RSS.
struct MemoryBound {
    pid: u32,
    before_kb: u64,
    bound_kb: u64,
}

impl MemoryBound {
    fn of(server: &Herald, bound_kb: u64) -> Self {
        Self { pid: server.pid(), before_kb: rss_kb(server.pid()), bound_kb }
    }

    fn check(&self, load: &str) {
        let grown_kb = rss_kb(self.pid).saturating_sub(self.before_kb);
        println!("{load} grew RSS by {grown_kb} kB (bound {} kB)", self.bound_kb);
        assert!(grown_kb < self.bound_kb, "{load} grew RSS by {grown_kb} kB, past {} kB", self.bound_kb);
    }
}

/// What the small probes (a few connections, a few dozen frames) may add
/// to RSS: a few connections' buffers and rooms, with room for the
/// allocator's pages.
const PROBE_BOUND_KB: u64 = 8 * 1024;

/// Someone else on the server, who must be served whatever the others did.
async fn expect_bystander_served(server: &impl Endpoint) {
    let mut bystander = ws_connect_as(server, "bystander").await;
    let pong = bystander.request(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(pong, json!({"type": "pong", "id": "still"}));
    let joined = bystander.join("bystanders").await;
    assert_eq!(joined["users"], json!(["bystander"]));
}

/// A token for `sub` whose `rooms` claim is `rooms`.
fn claim(sub: &str, rooms: Value) -> String {
    token(sub, json!({ "rooms": rooms }))
}

/// Sends a join with the room as its id; returns the reply, skipping the
/// room events that may come first.
async fn try_join(client: &mut Client, room: &str) -> Value {
    client.send(json!({"type": "join", "room": room, "id": room})).await;
    loop {
        let frame = client.recv().await;
        if frame["id"] == room {
            return frame;
        }
    }
}

// ---- user: rooms ----------------------------------------------------------

#[tokio::test]
async fn no_rooms_claim_opens_another_users_room_and_none_closes_ones_own() {
    let server = herald_with("").await;
    let memory = MemoryBound::of(&server, PROBE_BOUND_KB);
    for rooms in [json!(["*"]), json!(["user:*"]), json!(["*:*"]), json!(["user:bob"]), json!(["lobby"])] {
        let mut alice = ws_connect_token(&server, &claim("alice", rooms.clone())).await;
        let reply = try_join(&mut alice, "user:bob").await;
        assert_eq!((&reply["type"], &reply["code"]), (&json!("error"), &json!("FORBIDDEN")), "{rooms}: {reply}");
        let reply = alice.request(json!({"type": "presence", "room": "user:bob", "id": 1})).await;
        assert_eq!(reply["code"], "FORBIDDEN", "{rooms}: presence of another user's room: {reply}");
        let reply = try_join(&mut alice, "user:alice").await;
        assert_eq!(reply["type"], "joined", "{rooms}: the user's own room: {reply}");
    }
    // The same over SSE.
    let sse = SseClient::open(
        server.addr,
        &format!("/sse?rooms=user:bob&token={}", claim("alice", json!(["*"]))),
        SseOpen::default(),
    )
    .await;
    assert_eq!(sse.status, 403, "an SSE subscription to another user's room");
    expect_bystander_served(&server).await;
    memory.check("reaching for other users' rooms");
}

// ---- re-authentication ----------------------------------------------------

#[tokio::test]
async fn an_auth_refresh_with_narrower_claims_leaves_the_rooms_it_no_longer_allows_at_once() {
    let server = herald_with("").await;
    let memory = MemoryBound::of(&server, PROBE_BOUND_KB);
    let mut alice = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    for room in ["chat:1", "chat:2", "lobby"] {
        alice.join(room).await;
    }
    bob.join("chat:1").await;
    assert_eq!(alice.recv_type("user_joined").await["user"], "bob");

    let refreshed = claim("alice", json!(["lobby", "user:*"]));
    alice.send(json!({"type": "auth", "token": refreshed, "id": "narrow"})).await;
    let mut left = Vec::new();
    let authed = loop {
        let frame = alice.recv().await;
        match frame["type"].as_str() {
            Some("left") => {
                assert!(frame.get("id").is_none(), "a left it did not ask for carries no id: {frame}");
                left.push(frame["room"].as_str().unwrap().to_owned());
            }
            Some("authed") => break frame,
            _ => panic!("only left frames come before authed: {frame}"),
        }
    };
    left.sort();
    assert_eq!(left, ["chat:1", "chat:2"], "every room the new claims disallow, and only those");
    assert_eq!(authed, json!({"type": "authed", "user": "alice", "id": "narrow"}));

    // The others see alice go, and she neither publishes nor receives there.
    let gone = bob.recv_type("user_left").await;
    assert_eq!((&gone["room"], &gone["user"]), (&json!("chat:1"), &json!("alice")));
    let reply = alice.request(json!({"type": "publish", "room": "chat:1", "data": "x", "id": "p"})).await;
    assert_eq!(reply["code"], "NOT_IN_ROOM", "{reply}");
    bob.request(json!({"type": "publish", "room": "chat:1", "data": "for members", "echo": false, "id": "b"})).await;
    alice.expect_silence(Duration::from_millis(300)).await;
    let presence = bob.request(json!({"type": "presence", "room": "chat:1"})).await;
    assert_eq!(presence["users"], json!(["bob"]));
    // The room still allowed is kept.
    let ack = alice.request(json!({"type": "publish", "room": "lobby", "data": "still here", "id": "l"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // And a disallowed room cannot be joined again.
    assert_eq!(try_join(&mut alice, "chat:1").await["code"], "FORBIDDEN");
    expect_bystander_served(&server).await;
    memory.check("narrowing claims");
}

#[tokio::test]
async fn an_anonymous_connection_that_authenticates_is_told_the_rooms_it_left() {
    let server = herald_with("").await;
    let (mut client, _) = ws_connect(&server).await;
    client.join("lobby").await;
    client.send(json!({"type": "auth", "token": token("alice", json!({})), "id": "up"})).await;
    assert_eq!(client.recv().await, json!({"type": "left", "room": "lobby"}), "its anonymous membership ends");
    assert_eq!(client.recv().await, json!({"type": "authed", "user": "alice", "id": "up"}));
}

// ---- subjects ---------------------------------------------------------------

/// A token signed with the test secret whose header is `header`'s.
fn token_with_header(claims: Value, header: jsonwebtoken::Header) -> String {
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn subjects_made_to_be_mistaken_and_critical_headers_are_invalid_tokens() {
    let server = herald_with("").await;
    let memory = MemoryBound::of(&server, PROBE_BOUND_KB);
    let exp = herald::protocol::now_ms() / 1000 + 3600;
    let mut tokens: Vec<(String, String)> = ["", "a\u{0}b", "alice\nadmin", "bell\u{7}", "anon:x-1", "anon:"]
        .iter()
        .map(|sub| (format!("sub {sub:?}"), token_with(json!({"sub": sub}), json!({}), SECRET)))
        .collect();
    tokens.push(("sub of 257 bytes".into(), token_with(json!({"sub": "x".repeat(257)}), json!({}), SECRET)));
    let critical = jsonwebtoken::Header { crit: Some(vec!["urn:example:must-understand".into()]), ..Default::default() };
    tokens.push(("a crit header".into(), token_with_header(json!({"sub": "alice", "exp": exp}), critical)));

    for (what, token) in &tokens {
        // At the handshake...
        let mut client = ws_connect_raw(&format!("{}?token={token}", server.ws_url()), &[]).await;
        assert_eq!(client.expect_close().await, (4002, "invalid token".to_owned()), "{what} at the handshake");
        // ...and in an auth frame.
        let (mut client, _) = ws_connect(&server).await;
        client.send(json!({"type": "auth", "token": token})).await;
        assert_eq!(client.expect_close().await, (4002, "invalid token".to_owned()), "{what} in an auth frame");
    }
    // Right at the limits is fine: 256 bytes, and a sub that only looks like `anon`.
    for sub in ["x".repeat(256), "anonymous".into(), "anon".into()] {
        let mut client = ws_connect_as(&server, &sub).await;
        let pong = client.request(json!({"type": "ping", "id": 1})).await;
        assert_eq!(pong["type"], "pong", "{sub}");
    }
    expect_bystander_served(&server).await;
    memory.check("odd subjects");
}

#[tokio::test]
async fn a_token_with_an_audience_is_accepted() {
    let server = herald_with("").await;
    let mut client = ws_connect_token(&server, &token("alice", json!({"aud": "my-app"}))).await;
    let joined = client.join("lobby").await;
    assert_eq!(joined["users"], json!(["alice"]));
}

// ---- rooms without a cap ----------------------------------------------------

async fn metric(server: &Herald, series: &str) -> f64 {
    Snapshot::take(server).await.value(series).unwrap_or(0.0)
}

/// The cap: rooms a node may hold in the room-spam test.
const MAX_ROOMS: usize = 500;
/// Anonymous spammers, and the rooms each tries to make (5,000 in all, ten
/// times the cap).
const SPAMMERS: usize = 50;
const ROOMS_EACH: usize = 100;
/// What the spam may add to the server's RSS, in kB. 500 rooms with one
/// member cost under 1 KiB each and 50 connections a few KiB each: the
/// rest is headroom for allocator pages, and far less than the 5,000 rooms
/// an uncapped node would hold.
const SPAM_RSS_BOUND_KB: u64 = 16 * 1024;

#[tokio::test]
async fn past_max_rooms_joins_that_would_create_a_room_are_refused_and_memory_stays_bounded() {
    let server = herald_with(&format!("{UNLIMITED}max_rooms = {MAX_ROOMS}\nmax_rooms_per_conn = {ROOMS_EACH}")).await;
    let memory = MemoryBound::of(&server, SPAM_RSS_BOUND_KB);
    let spam = (0..SPAMMERS).map(|n| {
        let server = &server;
        async move {
            let (mut client, _) = ws_connect(server).await;
            let (mut joined, mut refused) = (0, 0);
            for room in 0..ROOMS_EACH {
                let reply = try_join(&mut client, &format!("spam-{n}-{room}")).await;
                match (reply["type"].as_str(), reply["code"].as_str()) {
                    (Some("joined"), _) => joined += 1,
                    (Some("error"), Some("TOO_MANY_ROOMS")) => refused += 1,
                    _ => panic!("a join is joined or TOO_MANY_ROOMS: {reply}"),
                }
            }
            (client, joined, refused)
        }
    });
    let results = join_all(spam).await;
    let joined: usize = results.iter().map(|r| r.1).sum();
    let refused: usize = results.iter().map(|r| r.2).sum();
    assert_eq!((joined, refused), (MAX_ROOMS, SPAMMERS * ROOMS_EACH - MAX_ROOMS));
    let (_, stats) = api(server.addr, "GET", "/api/stats", Some(API_KEY), "").await;
    assert_eq!(stats["rooms"], MAX_ROOMS, "{stats}");
    assert_eq!(metric(&server, "herald_rooms_active").await, MAX_ROOMS as f64);
    assert_eq!(metric(&server, r#"herald_joins_refused_total{reason="max_rooms"}"#).await, refused as f64);
    memory.check("room spam");

    // At the cap, a room that exists can still be joined; a new one cannot.
    let mut member = ws_connect_as(&server, "member").await;
    assert_eq!(try_join(&mut member, "spam-0-0").await["type"], "joined");
    assert_eq!(try_join(&mut member, "fresh").await["code"], "TOO_MANY_ROOMS");
    // Once the spammers go, their rooms go, and new rooms can be made again.
    drop(results);
    assert!(
        eventually(WAIT, || async { metric(&server, "herald_rooms_active").await <= 1.0 }).await,
        "the spammers' rooms are gone"
    );
    assert_eq!(try_join(&mut member, "fresh").await["type"], "joined");
    expect_bystander_served(&server).await;
}

// ---- presence amplification ---------------------------------------------------

/// Connections in the one room of the presence test, and how many of them
/// ask for presence, how many times each.
const CROWD: usize = 200;
const ASKERS: usize = 100;
const ASKS_EACH: usize = 20;
/// What the presence load may add to the server's RSS, in kB: the crowd's
/// connections and the room, the list shared by every reply, and the
/// replies waiting in sockets' queues. Replies built anew and held would not
/// fit: 2,000 of them, of 2.6 kB each, are 5 MB.
const PRESENCE_RSS_BOUND_KB: u64 = 24 * 1024;

#[tokio::test]
async fn presence_asked_in_a_loop_is_answered_from_one_list_and_memory_stays_bounded() {
    let server = herald_with(UNLIMITED).await;
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        let (mut client, _) = ws_connect(&server).await;
        client.join("amp").await;
        crowd.push(client);
    }
    let memory = MemoryBound::of(&server, PRESENCE_RSS_BOUND_KB);
    let asks = crowd.iter_mut().take(ASKERS).map(|client| async move {
        for n in 0..ASKS_EACH {
            client.send(json!({"type": "presence", "room": "amp", "id": n})).await;
        }
        let mut answered = 0;
        while answered < ASKS_EACH {
            let frame = client.recv_type("presence").await;
            let users = frame["users"].as_array().expect("users");
            assert_eq!(users.len(), CROWD, "every user, each once");
            assert_eq!(frame["count"], CROWD, "count says as many");
            answered += 1;
        }
    });
    join_all(asks).await;
    memory.check("presence in a loop");
    let (status, body) = api(server.addr, "GET", "/api/rooms/amp/presence", Some(API_KEY), "").await;
    assert_eq!((status, body["users"].as_array().map(Vec::len)), (200, Some(CROWD)));
    expect_bystander_served(&server).await;
}

#[tokio::test]
async fn presence_requests_count_against_the_rate_limit() {
    let server = herald_with("rate_per_sec = 1\nrate_burst = 5\nrate_strikes = 1000\n").await;
    let (mut client, _) = ws_connect(&server).await;
    for n in 0..20 {
        client.send(json!({"type": "presence", "room": "amp", "id": n})).await;
    }
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..20 {
        let frame = client.recv().await;
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("presence"), _) => answered += 1,
            (Some("error"), Some("RATE_LIMITED")) => limited += 1,
            _ => panic!("{frame}"),
        }
    }
    assert!(answered <= 7 && limited >= 13, "a burst of 5 at 1/s: {answered} answered, {limited} limited");
    expect_bystander_served(&server).await;
}
