//! Herald's server API from the coordinator: a minimal HTTP/1.1 client over
//! one kept-alive connection, on a plain blocking socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest a request may take, each way.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read.
const MAX_BODY: usize = 1 << 20;

/// One kept-alive connection to the server API.
pub struct Api {
    addr: SocketAddr,
    host: String,
    key: Option<String>,
    stream: Option<BufReader<TcpStream>>,
}

/// Why a request got no answer.
#[derive(Debug)]
struct Failed {
    reason: String,
    /// The connection was closed before any byte of an answer: a kept-alive
    /// connection the server had already let go.
    stale: bool,
}

impl Api {
    /// `base` is `http://host:port` (a path after it is ignored).
    pub fn new(base: &str, key: Option<String>) -> Result<Self, String> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: the API URL must start with http://"))?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        let with_port = match host.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => host.clone(),
            _ => format!("{host}:80"),
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{host}: no IPv4 address"))?;
        Ok(Self { addr, host, key, stream: None })
    }

    /// The API base URL of a WebSocket URL: `ws://h:p/ws` → `http://h:p`.
    pub fn base_of(ws_url: &str) -> Result<String, String> {
        let rest = ws_url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{ws_url}: only ws:// URLs are supported"))?;
        Ok(format!("http://{}", rest.split(['/', '?']).next().unwrap_or_default()))
    }

    /// Sends one request and returns the status and body. A kept-alive
    /// connection found closed before it answered is replaced once.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
        for _ in 0..2 {
            let reused = self.stream.is_some();
            match self.exchange(method, path, body) {
                Ok(answer) => return Ok(answer),
                Err(failed) => {
                    self.stream = None;
                    if !(reused && failed.stale) {
                        return Err(failed.reason);
                    }
                }
            }
        }
        Err(format!("{method} {path}: the connection closed twice before an answer"))
    }

    fn exchange(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), Failed> {
        let fail = |reason: String| Failed { reason, stale: false };
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .map_err(|e| fail(format!("connect {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("just connected");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(key) = &self.key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        match body {
            Some(body) => request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => request.push_str("\r\n"),
        }
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| Failed { reason: format!("write: {e}"), stale: true })?;
        let mut line = String::new();
        match stream.read_line(&mut line) {
            Ok(0) => return Err(Failed { reason: "closed before an answer".into(), stale: true }),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("read: {e}"))),
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(format!("not an HTTP status line: {line:?}")))?;
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            stream.read_line(&mut line).map_err(|e| fail(format!("read: {e}")))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().map_err(|_| fail(format!("bad length {value:?}")))?,
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "transfer-encoding" => return Err(fail(format!("transfer-encoding {value} is not read here"))),
                _ => {}
            }
        }
        if length > MAX_BODY {
            return Err(fail(format!("an answer of {length} bytes")));
        }
        let mut answer = vec![0; length];
        stream.read_exact(&mut answer).map_err(|e| fail(format!("read body: {e}")))?;
        if close {
            self.stream = None;
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }

    /// `GET /api/rooms/{room}/history?since=N&limit=1`: the room's latest `seq`.
    pub fn latest_seq(&mut self, room: &str, since: u64) -> Result<u64, String> {
        let path = format!("/api/rooms/{room}/history?since={since}&limit=1");
        let (status, body) = self.request("GET", &path, None)?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        let value: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))?;
        value["seq"].as_u64().ok_or_else(|| format!("GET {path}: no seq in {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_comes_from_the_websocket_url() {
        assert_eq!(Api::base_of("ws://127.0.0.1:18090/ws").unwrap(), "http://127.0.0.1:18090");
        assert_eq!(Api::base_of("ws://127.0.0.1:9/ws?x=1").unwrap(), "http://127.0.0.1:9");
        assert!(Api::base_of("http://127.0.0.1:9").is_err());
        assert!(Api::new("ws://127.0.0.1:9", None).is_err());
        assert!(Api::new("http://127.0.0.1:9/anything", None).is_ok());
    }
}
