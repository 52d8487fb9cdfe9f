//! WebSocket clients over real sockets, the frames tests send most, and
//! reading a raw socket until the server ends it.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{token, Endpoint, WAIT};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub struct Client {
    ws: Stream,
    /// Frames read while waiting for a `joined`, given out first by the
    /// next reads.
    early: std::collections::VecDeque<Value>,
}

/// What a read ended with.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(Option<(u16, String)>),
}

impl Client {
    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.expect("send");
    }

    /// Sends any WebSocket message.
    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends any WebSocket message; false when the connection is already gone.
    pub async fn try_send_message(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// The next JSON frame or the close, within [`WAIT`]. Panics on timeout.
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(WAIT).await.expect("a frame or a close within the wait")
    }

    /// The next JSON frame or close within `wait`, or `None` if nothing came.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<Event> {
        if let Some(frame) = self.early.pop_front() {
            return Some(Event::Frame(frame));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Event::Closed(None)),
                Ok(Some(Err(_))) => return Some(Event::Closed(None)),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) => {
                    return Some(Event::Frame(serde_json::from_str(&text).expect("server frames are JSON")))
                }
                Message::Close(frame) => {
                    return Some(Event::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string()))))
                }
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame. Panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(v) => v,
            Event::Closed(c) => panic!("expected a frame, the connection closed: {c:?}"),
        }
    }

    /// Skips frames until one of type `ty` arrives, and returns it.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == ty {
                return frame;
            }
        }
    }

    /// Asserts that no frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(event) = self.next_event_within(wait).await {
            panic!("expected nothing, got {event:?}");
        }
    }

    /// Reads until the connection closes, returning the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_event().await {
                Event::Closed(Some(close)) => return close,
                Event::Closed(None) => panic!("connection ended without a close frame"),
                Event::Frame(_) => continue,
            }
        }
    }

    /// Sends `frame` and returns the next frame.
    pub async fn request(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.recv().await
    }

    /// Joins `room`, returning the `joined` frame. Frames of other rooms may
    /// arrive before it (none of this room: PROTOCOL.md, "Frames around
    /// `joined` and `left`"): they are kept, in order, for the reads that
    /// follow.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        let mut early = Vec::new();
        loop {
            let frame = match self.next_event_within(WAIT).await {
                Some(Event::Frame(frame)) => frame,
                other => panic!("expected `joined`, got {other:?} after {early:?}"),
            };
            assert_ne!(frame["type"], "error", "{frame}");
            if frame["type"] == "joined" && frame["room"] == room {
                self.early.extend(early);
                return frame;
            }
            early.push(frame);
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        // Wait for the server's answer so its cleanup has begun.
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// Opens a WebSocket to `url` with optional extra headers; does not read `welcome`.
pub async fn ws_connect_raw(url: &str, headers: &[(&str, &str)]) -> Client {
    let mut request = url.into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");
    Client { ws, early: Default::default() }
}

/// Connects as an anonymous client and reads `welcome`.
pub async fn ws_connect(server: &impl Endpoint) -> (Client, Value) {
    let mut client = ws_connect_raw(&server.ws_url(), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// Connects as `user` (token in `?token=`) and reads `welcome`.
pub async fn ws_connect_as(server: &impl Endpoint, user: &str) -> Client {
    ws_connect_token(server, &token(user, json!({}))).await
}

/// Connects with `token` in `?token=` and reads `welcome`.
pub async fn ws_connect_token(server: &impl Endpoint, token: &str) -> Client {
    let mut client = ws_connect_raw(&format!("{}?token={token}", server.ws_url()), &[]).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

/// Connects as an anonymous client over a socket whose receive buffer is
/// `size` bytes, and reads `welcome`. A client that then stops reading fills
/// its server-side buffers after little traffic.
pub async fn ws_connect_recv_buffer(server: &impl Endpoint, size: u32) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr()).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket upgrade");
    let mut client = Client { ws, early: Default::default() };
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

/// Reads until the server ends the connection (EOF or reset); panics if it
/// is still open after `wait`.
pub async fn read_until_closed(stream: &mut TcpStream, mut buf: Vec<u8>, wait: Duration) -> Vec<u8> {
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.expect("the server ends the connection");
    buf
}

/// A `ping` frame with `id`.
pub fn ping(id: Value) -> Value {
    json!({"type": "ping", "id": id})
}

/// A text frame of exactly `len` bytes: a `ping` padded with an ignored field.
pub fn padded_ping(id: &str, len: usize) -> String {
    let head = format!(r#"{{"type":"ping","id":"{id}","pad":""#);
    let text = format!("{head}{}\"}}", "x".repeat(len - head.len() - 2));
    assert_eq!(text.len(), len);
    text
}
