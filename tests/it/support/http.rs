//! Plain HTTP/1.1 over real sockets: requests that panic on any failure, the
//! server API's calls, and a GET that never panics for servers that may not
//! be up (yet, or any more).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// A minimal HTTP/1.1 GET over a real socket: returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// A minimal HTTP/1.1 request: returns (status, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("response in time").expect("read");
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A GET that never panics: (status, body), or `None` when the server cannot
/// be reached or does not answer within 2 s.
pub async fn fetch(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split(' ').nth(1)?.parse().ok()?;
        Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten()
}

/// Calls the server API: `key` goes in `Authorization: Bearer` (none: no header).
/// Returns the status and the JSON body (every API answer has one).
pub async fn api(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let (status, text) = http_request(addr, method, path, &headers, body).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path} -> {status}: body is not JSON: {text:?}"));
    (status, json)
}

/// `POST /api/publish` `{room, data}` with `key`, which must answer 200;
/// the message's `seq`.
pub async fn publish_via_api(addr: SocketAddr, key: &str, room: &str, data: Value) -> u64 {
    let body = serde_json::json!({"room": room, "data": data}).to_string();
    let (status, reply) = api(addr, "POST", "/api/publish", Some(key), &body).await;
    assert_eq!(status, 200, "{reply}");
    reply["seq"].as_u64().expect("seq")
}
