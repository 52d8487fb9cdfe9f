//! The server API (`/api/*`) against a real server over real sockets: the key
//! check on every route, bad requests, and each call's effect as WebSocket
//! clients see it: `seq` shared with their publishes, direct and broadcast
//! delivery, presence, status, stats and the request metric.

use crate::support::*;

use std::time::Duration;

use serde_json::{json, Value};

const KEY: &str = "api-test-key";

/// Every route with a request that succeeds given the key.
const ROUTES: [(&str, &str, &str); 6] = [
    ("POST", "/api/publish", r#"{"room":"r","data":1}"#),
    ("POST", "/api/direct", r#"{"user":"u","data":1}"#),
    ("POST", "/api/broadcast", r#"{"data":1}"#),
    ("GET", "/api/rooms/r/presence", ""),
    ("GET", "/api/users/u/status", ""),
    ("GET", "/api/stats", ""),
];

fn server() -> TestServer {
    let mut config = config();
    config.api.key = KEY.into();
    start(config)
}

async fn call(server: &TestServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    api(server.addr, method, path, Some(KEY), body).await
}

async fn post(server: &TestServer, path: &str, body: Value) -> Value {
    let (status, reply) = call(server, "POST", path, &body.to_string()).await;
    assert_eq!(status, 200, "{path} {body} -> {reply}");
    reply
}

async fn get(server: &TestServer, path: &str) -> Value {
    let (status, reply) = call(server, "GET", path, "").await;
    assert_eq!(status, 200, "{path} -> {reply}");
    reply
}

fn assert_error(status: u16, reply: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what} -> {reply}");
    assert!(reply["error"].as_str().is_some_and(|m| !m.is_empty()), "{what} -> {reply}");
}

#[tokio::test]
async fn every_route_wants_the_key() {
    let server = server();
    for (method, path, body) in ROUTES {
        let (status, reply) = api(server.addr, method, path, None, body).await;
        assert_error(status, &reply, 401, &format!("{method} {path} without a key"));
        let (status, reply) = api(server.addr, method, path, Some("not-the-key"), body).await;
        assert_error(status, &reply, 401, &format!("{method} {path} with a wrong key"));
        let (status, reply) = api(server.addr, method, path, Some(&format!("{KEY}x")), body).await;
        assert_error(status, &reply, 401, &format!("{method} {path} with the key and more"));
        let (status, reply) = call(&server, method, path, body).await;
        assert_eq!(status, 200, "{method} {path} with the key -> {reply}");
    }
    let (status, reply) = api(server.addr, "GET", "/api/nowhere", None, "").await;
    assert_error(status, &reply, 401, "an unknown route without a key");
}

#[tokio::test]
async fn without_a_configured_key_every_call_is_forbidden() {
    let server = start(config());
    for (method, path, body) in ROUTES.into_iter().chain([("GET", "/api/nowhere", ""), ("DELETE", "/api/stats", "")]) {
        for key in [None, Some(""), Some(KEY)] {
            let (status, reply) = api(server.addr, method, path, key, body).await;
            assert_error(status, &reply, 403, &format!("{method} {path} with {key:?}"));
        }
    }
}

#[tokio::test]
async fn bad_bodies_are_400_and_name_the_field() {
    let server = server();
    let cases = [
        ("/api/publish", "{", "JSON"),
        ("/api/publish", "", "JSON"),
        ("/api/publish", "[1]", "object"),
        ("/api/publish", r#"{"data":1}"#, "room"),
        ("/api/publish", r#"{"room":"r"}"#, "data"),
        ("/api/publish", r#"{"room":"a b","data":1}"#, "room"),
        ("/api/publish", r#"{"room":"","data":1}"#, "room"),
        ("/api/publish", r#"{"room":7,"data":1}"#, "room"),
        ("/api/publish", r#"{"room":"r","data":1,"from":false}"#, "from"),
        ("/api/direct", r#"{"data":1}"#, "user"),
        ("/api/direct", r#"{"user":["u"],"data":1}"#, "user"),
        ("/api/direct", r#"{"user":"u"}"#, "data"),
        ("/api/broadcast", r#"{}"#, "data"),
        ("/api/broadcast", "null", "object"),
    ];
    for (path, body, field) in cases {
        let (status, reply) = call(&server, "POST", path, body).await;
        assert_error(status, &reply, 400, &format!("{path} {body}"));
        assert!(reply["error"].as_str().unwrap().contains(field), "{path} {body} -> {reply}, should name {field}");
    }
    let long = "a".repeat(129);
    for path in ["/api/rooms/a%20b/presence".to_owned(), format!("/api/rooms/{long}/presence")] {
        let (status, reply) = call(&server, "GET", &path, "").await;
        assert_error(status, &reply, 400, &path);
    }
    let huge = json!({"room": "r", "data": "x".repeat(70_000)}).to_string();
    let (status, reply) = call(&server, "POST", "/api/publish", &huge).await;
    assert_error(status, &reply, 413, "a body over max_message_bytes");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = server();
    for path in ["/api", "/api/", "/api/nowhere", "/api/rooms/r", "/api/users/u/status/x"] {
        let (status, reply) = call(&server, "GET", path, "").await;
        assert_error(status, &reply, 404, path);
    }
    for (method, path) in [("GET", "/api/publish"), ("PUT", "/api/direct"), ("POST", "/api/stats"), ("DELETE", "/api/rooms/r/presence")] {
        let (status, reply) = call(&server, method, path, "{}").await;
        assert_error(status, &reply, 405, &format!("{method} {path}"));
    }
}

#[tokio::test]
async fn api_publishes_share_seq_and_order_with_websocket_publishes() {
    let server = server();
    let (mut alice, mut bob) = (ws_connect_as(&server, "alice").await, ws_connect_as(&server, "bob").await);
    alice.join("chat").await;
    bob.join("chat").await;
    alice.recv_type("user_joined").await;
    let publish = |id: u64| json!({"type": "publish", "room": "chat", "data": {"n": id}, "id": id, "echo": false});
    assert_eq!(alice.request(publish(1)).await, json!({"type": "ack", "seq": 1, "id": 1}));
    assert_eq!(post(&server, "/api/publish", json!({"room": "chat", "data": {"n": 2}})).await, json!({"seq": 2}));
    alice.send(publish(3)).await;
    let to_alice = alice.recv().await;
    assert_eq!((&to_alice["seq"], &to_alice["from"]), (&json!(2), &json!("server")), "members get API publishes");
    assert_eq!(alice.recv().await, json!({"type": "ack", "seq": 3, "id": 3}));
    let reply = post(&server, "/api/publish", json!({"room": "chat", "data": {"n": 4}, "from": "billing"})).await;
    assert_eq!(reply, json!({"seq": 4}));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let m = bob.recv_type("message").await;
        assert_eq!((&m["room"], &m["data"]["n"]), (&json!("chat"), &m["seq"]), "{m}");
        assert!(m["ts"].as_u64().is_some_and(|ts| ts > 0), "{m}");
        seen.push((m["seq"].as_u64().unwrap(), m["from"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, [(1, "alice".into()), (2, "server".into()), (3, "alice".into()), (4, "billing".into())]);
}

#[tokio::test]
async fn api_publish_to_an_empty_room_advances_seq() {
    let server = server();
    assert_eq!(post(&server, "/api/publish", json!({"room": "quiet", "data": null})).await, json!({"seq": 1}));
    assert_eq!(post(&server, "/api/publish", json!({"room": "quiet", "data": null})).await, json!({"seq": 2}));
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("quiet").await;
    let ack = alice.request(json!({"type": "publish", "room": "quiet", "data": 1, "id": "p"})).await;
    assert_eq!(ack["seq"], 3, "{ack}");
    alice.recv_type("message").await;
    alice.close().await;
    // Once the room is empty again the count carries on from the shard.
    let next = post(&server, "/api/publish", json!({"room": "quiet", "data": null})).await;
    assert_eq!(next, json!({"seq": 4}));
}

#[tokio::test]
async fn direct_reaches_every_connection_of_the_user_and_no_one_else() {
    let server = server();
    let mut tab1 = ws_connect_as(&server, "alice").await;
    let mut tab2 = ws_connect_as(&server, "alice").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    assert!(eventually(WAIT, || async { get(&server, "/api/users/alice/status").await["online"] == true }).await);
    assert_eq!(post(&server, "/api/direct", json!({"user": "alice", "data": {"hi": 1}})).await, json!({}));
    for tab in [&mut tab1, &mut tab2] {
        let frame = tab.recv().await;
        assert_eq!((&frame["type"], &frame["from"], &frame["data"]), (&json!("direct"), &json!("server"), &json!({"hi": 1})));
        assert!(frame["ts"].as_u64().is_some(), "{frame}");
    }
    post(&server, "/api/direct", json!({"user": "alice", "data": 2, "from": "support"})).await;
    assert_eq!(tab1.recv().await["from"], "support");
    assert_eq!(post(&server, "/api/direct", json!({"user": "nobody", "data": 1})).await, json!({}));
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let server = server();
    let (mut anonymous, _) = ws_connect(&server).await;
    let mut roomless = ws_connect_as(&server, "bob").await;
    let mut member = ws_connect_as(&server, "carol").await;
    member.join("lobby").await;
    let reply = post(&server, "/api/broadcast", json!({"data": {"notice": "maintenance"}})).await;
    assert_eq!(reply["delivered"], 3, "{reply}");
    for client in [&mut anonymous, &mut roomless, &mut member] {
        let frame = client.recv().await;
        assert_eq!((&frame["type"], &frame["data"]), (&json!("broadcast"), &json!({"notice": "maintenance"})), "{frame}");
        assert!(frame["ts"].as_u64().is_some(), "{frame}");
    }
}

#[tokio::test]
async fn presence_and_status_agree_with_the_websocket_answers() {
    let server = server();
    let (mut alice, mut bob) = (ws_connect_as(&server, "alice").await, ws_connect_as(&server, "bob").await);
    alice.join("room:1").await;
    bob.join("room:1").await;
    let _second_tab = {
        let mut tab = ws_connect_as(&server, "alice").await;
        tab.join("room:1").await;
        tab
    };
    alice.send(json!({"type": "presence", "room": "room:1"})).await;
    let ws = alice.recv_type("presence").await;
    let http = get(&server, "/api/rooms/room:1/presence").await;
    assert_eq!(http, json!({"room": "room:1", "users": ws["users"], "count": ws["count"]}));
    assert_eq!((&http["users"], &http["count"]), (&json!(["alice", "bob"]), &json!(2)), "count counts users, not tabs");
    assert_eq!(get(&server, "/api/rooms/empty/presence").await, json!({"room": "empty", "users": [], "count": 0}));
    alice.send(json!({"type": "status", "users": ["bob", "carol"]})).await;
    let ws = alice.recv_type("status").await;
    assert_eq!(get(&server, "/api/users/bob/status").await, json!({"user": "bob", "online": ws["online"]["bob"]}));
    assert_eq!(get(&server, "/api/users/carol/status").await, json!({"user": "carol", "online": false}));
    bob.close().await;
    let gone = || async { get(&server, "/api/users/bob/status").await["online"] == false };
    assert!(eventually(WAIT, gone).await, "bob goes offline");
    assert_eq!(get(&server, "/api/rooms/room:1/presence").await["users"], json!(["alice"]));
}

#[tokio::test]
async fn stats_count_connections_rooms_and_users_of_this_node() {
    let mut config = config();
    config.api.key = KEY.into();
    config.auth.required = true;
    config.auth.timeout_ms = 10_000;
    let server = start(config);
    let mut alice = ws_connect_as(&server, "alice").await;
    alice.join("a").await;
    let mut tab = ws_connect_as(&server, "alice").await;
    tab.join("b").await;
    let mut bob = ws_connect_as(&server, "bob").await;
    bob.join("b").await;
    // Still authenticating: open, but not counted.
    let (_pending, welcome) = ws_connect(&server).await;
    assert_eq!(welcome["user"], Value::Null);
    stats_become(&server, json!({"node": "test", "connections": 3, "rooms": 2, "users": 2})).await;
    tab.close().await;
    bob.close().await;
    stats_become(&server, json!({"node": "test", "connections": 1, "rooms": 1, "users": 1})).await;
}

/// Waits for `/api/stats` to answer `expected` (presence learns of changes asynchronously).
async fn stats_become(server: &TestServer, expected: Value) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stats = get(server, "/api/stats").await;
        if stats == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "stats {stats}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_class() {
    let server = server();
    post(&server, "/api/publish", json!({"room": "m", "data": 1})).await;
    post(&server, "/api/publish", json!({"room": "m", "data": 2})).await;
    call(&server, "POST", "/api/publish", "{").await;
    get(&server, "/api/rooms/one/presence").await;
    get(&server, "/api/rooms/two/presence").await;
    api(server.addr, "GET", "/api/stats", None, "").await;
    call(&server, "GET", "/api/nowhere", "").await;
    let metrics = Snapshot::take(&server).await;
    let count = |route: &str, status: &str| {
        metrics.value(&format!(r#"herald_api_requests_total{{route="{route}",status="{status}"}}"#))
    };
    assert_eq!(count("/api/publish", "2xx"), Some(2.0), "{}", metrics.0);
    assert_eq!(count("/api/publish", "4xx"), Some(1.0));
    assert_eq!(count("/api/rooms/{room}/presence", "2xx"), Some(2.0));
    assert_eq!(count("/api/stats", "4xx"), Some(1.0));
    assert_eq!(count("/api/stats", "2xx"), Some(0.0));
    assert_eq!(count("other", "4xx"), Some(1.0));
    assert!(!metrics.0.contains("route=\"/api/rooms/one"), "raw paths never become labels");
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server();
    for (method, path, body) in ROUTES {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.shutdown().await.expect("half-close");
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("in time").expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{method} {path}: {response:?}");
    }
}
