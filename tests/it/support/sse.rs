//! A Server-Sent Events client over a real socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Endpoint, WAIT};

/// A Server-Sent Events client over a real socket, decoding the chunked
/// response body itself.
pub struct SseClient {
    stream: tokio::io::BufReader<TcpStream>,
    /// Decoded body bytes not yet consumed as lines.
    body: Vec<u8>,
    ended: bool,
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The id of the last event dispatched, as `EventSource.lastEventId`
    /// keeps it (an event with an `id:` and no data sets it too).
    pub last_event_id: Option<String>,
}

/// One item of an event stream.
#[derive(Debug, PartialEq)]
pub enum SseItem {
    /// An event's `data`, parsed as JSON.
    Data(Value),
    /// A comment line, without its `:`.
    Comment(String),
    /// The stream ended.
    End,
}

/// Options for [`sse_open`].
#[derive(Default)]
pub struct SseOpen<'a> {
    pub headers: &'a [(&'a str, &'a str)],
    /// A small receive buffer makes a client that stops reading stall its
    /// server soon.
    pub recv_buffer: Option<u32>,
}

impl SseClient {
    /// `GET path` and reads the response head.
    pub async fn open(addr: SocketAddr, path: &str, options: SseOpen<'_>) -> SseClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in options.headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut client =
            SseClient {
            stream: tokio::io::BufReader::new(stream),
            body: Vec::new(),
            ended: false,
            status: 0,
            headers: Vec::new(),
            last_event_id: None,
        };
        let status_line = client.socket_line().await;
        client.status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        loop {
            let line = client.socket_line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            client.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The JSON body of a refused request.
    pub async fn error_body(mut self) -> Value {
        let len: usize = self.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
        let mut body = vec![0; len];
        tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_exact(&mut self.stream, &mut body))
            .await
            .expect("body in time")
            .expect("body");
        serde_json::from_slice(&body).expect("a JSON error body")
    }

    async fn socket_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(WAIT, tokio::io::AsyncBufReadExt::read_line(&mut self.stream, &mut line))
            .await
            .expect("a line in time")
            .expect("read");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Reads one more chunk of the body; false at its end.
    async fn read_chunk(&mut self) -> bool {
        let size = self.socket_line().await;
        let size = match usize::from_str_radix(size.trim(), 16) {
            Ok(size) => size,
            // The connection closed without a last chunk.
            Err(_) => return false,
        };
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0; size + 2];
        if tokio::io::AsyncReadExt::read_exact(&mut self.stream, &mut chunk).await.is_err() {
            return false;
        }
        self.body.extend_from_slice(&chunk[..size]);
        true
    }

    async fn body_line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.body.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=at).collect();
                return Some(String::from_utf8(line).expect("utf-8").trim_end_matches(['\r', '\n']).to_owned());
            }
            if self.ended || !self.read_chunk().await {
                self.ended = true;
                return None;
            }
        }
    }

    /// The next event or comment, read for at most `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseItem> {
        tokio::time::timeout(wait, async {
            let mut data: Vec<String> = Vec::new();
            let mut id = None;
            loop {
                let Some(line) = self.body_line().await else { return SseItem::End };
                if line.is_empty() {
                    // Dispatch: the id buffer becomes the last event id,
                    // even for an event without data.
                    if let Some(id) = id.take() {
                        self.last_event_id = Some(id);
                    }
                    if !data.is_empty() {
                        return SseItem::Data(serde_json::from_str(&data.join("\n")).expect("data is JSON"));
                    }
                } else if let Some(comment) = line.strip_prefix(':') {
                    return SseItem::Comment(comment.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                } else if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
        })
        .await
        .ok()
    }

    /// The next event's data within [`WAIT`], skipping comments. Panics otherwise.
    pub async fn next_data(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                Some(SseItem::Data(value)) => return value,
                Some(SseItem::Comment(_)) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }
}

/// Opens `/sse?<query>` with no extra options.
pub async fn sse_open(server: &impl Endpoint, query: &str) -> SseClient {
    SseClient::open(server.addr(), &format!("/sse?{query}"), SseOpen::default()).await
}
