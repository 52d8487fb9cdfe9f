//! One Socket.IO client over engine.io's HTTP long polling, for `idle`.
//!
//! A session lives on one kept-alive HTTP/1.1 connection: the handshake
//! `GET` (answered `0{"sid":...}`), a `POST` of the namespace connect (`40`,
//! with the token as its auth), a `GET` that brings the connect's answer,
//! and from then on one long-poll `GET` always outstanding. The server
//! answers it with a ping (`2`) every ping interval; the client `POST`s the
//! pong (`3`) and polls again. That is what an idle browser tab on polling
//! holds: one socket, one waiting request. Closing drops the socket, which
//! ends the session on the server as a vanished client would.

use std::rc::Rc;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::connection::{opened, tcp_connect, LiveGuard};
use super::{Phase, Plan, Shared};
use crate::dialect::{self, Inbound};

/// engine.io's separator between packets of one polling payload.
const RECORD_SEPARATOR: char = '\u{1e}';
/// The largest response accepted; an idle session gets a few bytes at a time.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Opens the session and holds it until the `Close` phase.
pub(super) async fn run(
    shared: Rc<Shared>,
    plan: Plan,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
    phase: watch::Receiver<Phase>,
) {
    let _live = LiveGuard(shared.clone());
    let started = Instant::now();
    let attempt = tokio::time::timeout_at(deadline, open(&shared, &plan)).await;
    drop(permit);
    let Some(session) = opened(&shared, &plan, started, attempt) else { return };
    if let Err(reason) = session.hold(phase).await {
        shared.stats.borrow_mut().trouble.closed(&format!("#{}: {reason}", plan.index));
    }
}

/// The handshake's answer, of which only the session id matters here.
#[derive(Deserialize)]
struct Handshake {
    sid: String,
}

/// An open polling session.
struct Session {
    http: Http,
    /// The polling URL's path and query with `&sid=`.
    path: String,
    shared: Rc<Shared>,
}

/// The handshake, the namespace connect and its answer. Returns the session
/// and whether the connect carried a token.
async fn open(shared: &Rc<Shared>, plan: &Plan) -> Result<(Session, bool), String> {
    let endpoint = shared.endpoint_of(plan);
    let (host, path) = split_url(&endpoint.url)?;
    let stream = tcp_connect(endpoint.target, plan.source).await?;
    let mut http = Http { stream, host: host.to_string(), buf: Vec::with_capacity(512) };
    let open = http.get(path).await?;
    let Some(json) = open.strip_prefix('0') else {
        return Err(format!("handshake answered {open:?}"));
    };
    let handshake: Handshake = serde_json::from_str(json).map_err(|e| format!("handshake {json}: {e}"))?;
    let token = shared.secret.as_deref().map(|secret| crate::token::mint(secret, plan.index)).transpose()?;
    let path = format!("{path}&sid={}", handshake.sid);
    http.post(&path, &dialect::socketio_connect(token.as_deref())).await?;
    let mut session = Session { http, path, shared: shared.clone() };
    loop {
        let payload = session.http.get(&session.path).await?;
        let mut welcomed = false;
        for packet in payload.split(RECORD_SEPARATOR) {
            match dialect::decode(shared.dialect, packet) {
                Inbound::Welcome { .. } => welcomed = true,
                Inbound::EnginePing => session.pong().await?,
                Inbound::Other if packet == "6" => {}
                _ => return Err(format!("before welcome: {packet}")),
            }
        }
        if welcomed {
            return Ok((session, token.is_some()));
        }
    }
}

impl Session {
    /// Keeps a long poll outstanding, answering pings, until told to close.
    async fn hold(mut self, mut phase: watch::Receiver<Phase>) -> Result<(), String> {
        loop {
            self.http.send_get(&self.path).await?;
            let payload = loop {
                tokio::select! {
                    response = self.http.response() => break response?,
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow_and_update() == Phase::Close {
                            return Ok(());
                        }
                    }
                }
            };
            let mut ping = false;
            for packet in payload.split(RECORD_SEPARATOR) {
                match dialect::decode(self.shared.dialect, packet) {
                    Inbound::EnginePing => ping = true,
                    Inbound::Disconnect => return Err(format!("disconnected by the server: {packet}")),
                    // engine.io's noop, which ends a poll the server wants back.
                    Inbound::Other if packet == "6" => {}
                    _ => self.shared.stats.borrow_mut().trouble.unexpected(packet),
                }
            }
            if ping {
                self.pong().await?;
            }
        }
    }

    async fn pong(&mut self) -> Result<(), String> {
        self.http.post(&self.path, dialect::SOCKETIO_PONG).await
    }
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let at = rest.find('/').ok_or_else(|| format!("{url}: no path"))?;
    Ok(rest.split_at(at))
}

/// A kept-alive HTTP/1.1 connection that sends one request at a time.
struct Http {
    stream: TcpStream,
    host: String,
    /// Bytes read and not yet consumed by a response.
    buf: Vec<u8>,
}

impl Http {
    async fn get(&mut self, path: &str) -> Result<String, String> {
        self.send_get(path).await?;
        self.response().await
    }

    async fn send_get(&mut self, path: &str) -> Result<(), String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n", self.host);
        self.stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))
    }

    /// POSTs `body` and expects engine.io's `ok`.
    async fn post(&mut self, path: &str, body: &str) -> Result<(), String> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        match self.response().await?.as_str() {
            "ok" => Ok(()),
            other => Err(format!("POST {body:?} answered {other:?}")),
        }
    }

    /// The next response's body; an error for a status other than 200.
    /// Cancel-safe: what has arrived stays in `buf` for the next call.
    async fn response(&mut self) -> Result<String, String> {
        loop {
            if let Some((status, body, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                if self.buf.capacity() > 4096 {
                    self.buf.shrink_to(512);
                }
                return match status {
                    200 => Ok(body),
                    _ => Err(format!("status {status}: {}", body.chars().take(120).collect::<String>())),
                };
            }
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err("response over 1 MiB".into());
            }
            self.buf.reserve(512);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("connection ended".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// One complete HTTP response at the start of `buf`: its status, its body
/// (`Content-Length` or chunked) and the bytes it takes; `None` while
/// incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<(u16, String, usize)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad content-length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body_start = head_end + 4;
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| "body is not UTF-8".to_string());
    if chunked {
        let mut at = body_start;
        let mut body = Vec::new();
        loop {
            let Some(line_end) = buf[at..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
            let size_text = std::str::from_utf8(&buf[at..at + line_end]).map_err(|_| "bad chunk size".to_string())?;
            let size_hex = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
            let data = at + line_end + 2;
            if size == 0 {
                // No trailers from engine.io servers: the last chunk ends with one CRLF.
                return match buf.len() >= data + 2 {
                    true => Ok(Some((status, text(&body)?, data + 2))),
                    false => Ok(None),
                };
            }
            if buf.len() < data + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[data..data + size]);
            at = data + size + 2;
        }
    }
    let length = length.unwrap_or(0);
    match buf.len() >= body_start + length {
        true => Ok(Some((status, text(&buf[body_start..body_start + length])?, body_start + length))),
        false => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read_whole_with_a_length_or_in_chunks() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nokGET";
        assert_eq!(parse_response(ok).unwrap(), Some((200, "ok".to_string(), ok.len() - 3)));
        assert_eq!(parse_response(&ok[..ok.len() - 4]).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n40{\r\n2\r\n}\x1e\r\n1\r\n2\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), Some((200, "40{}\u{1e}2".to_string(), chunked.len())));
        assert_eq!(parse_response(&chunked[..chunked.len() - 2]).unwrap(), None);
        let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!";
        assert_eq!(parse_response(bad).unwrap(), Some((400, "nope!".to_string(), bad.len())));
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty).unwrap(), Some((204, String::new(), empty.len())));
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:3000/socket.io/?EIO=4&transport=polling").unwrap(),
            ("127.0.0.1:3000", "/socket.io/?EIO=4&transport=polling")
        );
        assert!(split_url("ws://127.0.0.1:3000/").is_err());
    }
}
