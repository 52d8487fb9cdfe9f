//! One load connection: a single task that opens the socket, waits for the
//! server's welcome (and `joined`), then serves until told to close —
//! answering heartbeats, publishing on schedule, and judging every frame.
//!
//! Buffers are kept small because a worker holds thousands of these: the
//! WebSocket read buffer starts at 2 KiB and grows only for larger frames.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Phase, Plan, Shared};
use crate::cli::Dialect;
use crate::dialect::{self, Inbound};
use crate::schedule::Schedule;

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Most publishes sent in a row before reading again, so a publisher that
/// fell behind still reads its deliveries while catching up.
const SEND_BATCH: u64 = 16;
/// How long a closing connection waits for the server's close reply.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Opens the connection and serves it until the `Close` phase.
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
    let Some(ws) = opened(&shared, &plan, started, attempt) else { return };
    Live { shared, plan, ws, phase, publishing: None }.serve().await;
}

/// Counts an attempt to open, begun at `started`, as connected or failed;
/// the opened connection when it did open. The attempt yields the
/// connection and whether it was authenticated.
pub(super) fn opened<T>(
    shared: &Shared,
    plan: &Plan,
    started: Instant,
    attempt: Result<Result<(T, bool), String>, tokio::time::error::Elapsed>,
) -> Option<T> {
    let mut connect = shared.connect.borrow_mut();
    let (conn, authenticated) = match attempt {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => {
            connect.failed(&format!("#{}: {reason}", plan.index));
            return None;
        }
        Err(_) => {
            connect.failed(&format!("#{}: no welcome before the deadline", plan.index));
            return None;
        }
    };
    connect.connected += 1;
    connect.authenticated += authenticated as u64;
    connect.latency.record(started.elapsed().as_micros() as u64);
    shared.progress.notify_one();
    Some(conn)
}

/// Counts the task as ended however it ends.
pub(super) struct LiveGuard(pub(super) Rc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get() - 1);
        self.0.progress.notify_one();
    }
}

pub(super) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // The library zeroes this much before every read, and a delivery is a
        // few hundred bytes: a small buffer is both leaner and faster here.
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// The largest frame a connection accepts. A `joined` lists every user in
/// the room: one of 19,000 anonymous users is about 420 KB, and named users
/// may be longer.
const MAX_FRAME_BYTES: usize = 16 << 20;

/// TCP connect from the plan's source address, WebSocket handshake, welcome,
/// and the join. Returns the stream and whether the welcome named a user.
async fn open(shared: &Shared, plan: &Plan) -> Result<(Ws, bool), String> {
    let endpoint = shared.endpoint_of(plan);
    let stream = tcp_connect(endpoint.target, plan.source).await?;
    let token = shared.secret.as_deref().map(|secret| crate::token::mint(secret, plan.index)).transpose()?;
    let url = match (&token, shared.dialect) {
        // Socket.IO carries the token in its connect packet instead.
        (Some(token), Dialect::Herald) => {
            let separator = if endpoint.url.contains('?') { '&' } else { '?' };
            format!("{}{separator}token={token}", endpoint.url)
        }
        _ => endpoint.url.clone(),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(websocket_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let authenticated = loop {
        let text = next_text(&mut ws).await?;
        match dialect::decode(shared.dialect, &text) {
            Inbound::Open => send(&mut ws, &dialect::socketio_connect(token.as_deref())).await?,
            Inbound::EnginePing => send(&mut ws, dialect::SOCKETIO_PONG).await?,
            Inbound::Welcome { user } => {
                if shared.secret.is_some() && shared.dialect == Dialect::Herald {
                    let want = crate::token::subject(plan.index);
                    if user.as_deref() != Some(want.as_str()) {
                        return Err(format!("welcome names user {user:?}, not {want}"));
                    }
                }
                // Anonymous Herald users are `anon:<conn>`; peers send null.
                // Socket.IO's connect reply names no user: a connect that
                // carried a token and was accepted counts as authenticated.
                break match shared.dialect {
                    Dialect::Herald => user.is_some_and(|u| !u.starts_with("anon:")),
                    Dialect::Socketio => token.is_some(),
                };
            }
            _ => return Err(format!("before welcome: {text}")),
        }
    };
    if let Some(room) = &plan.room {
        send(&mut ws, &dialect::join(shared.dialect, room)).await?;
        loop {
            let text = next_text(&mut ws).await?;
            match dialect::decode(shared.dialect, &text) {
                Inbound::Joined { room: joined } if joined == room.as_str() => break,
                Inbound::Presence { room: other } if other == room.as_str() => {
                    shared.stats.borrow_mut().presence.record();
                }
                Inbound::EnginePing => send(&mut ws, dialect::SOCKETIO_PONG).await?,
                _ => return Err(format!("waiting for joined: {text}")),
            }
        }
    }
    Ok((ws, authenticated))
}

pub(super) async fn tcp_connect(target: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(source) = source {
        // Leave the port choice to connect(): then one source address can
        // reuse a local port towards different destinations, and a bind alone
        // does not use up the ephemeral range.
        set_bind_no_port(&socket);
        socket.bind(SocketAddr::new(source.into(), 0)).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
    // Publishes are small and latency is what is measured.
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(stream)
}

fn set_bind_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    // Failure is harmless: bind then picks a port itself.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub(super) async fn send(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

/// The next text frame during the opening; a close or error ends the attempt.
pub(super) async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => return Err(close_reason(frame.as_ref())),
            Some(Ok(Message::Binary(_))) => return Err("binary frame before welcome".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".into()),
        }
    }
}

pub(super) fn close_reason(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed {} {}", u16::from(f.code), f.reason),
        None => "closed without a code".into(),
    }
}

/// A publisher's progress through one step's schedule.
struct Publishing {
    schedule: Schedule,
    next: u64,
    end: u64,
    measured: Range<u64>,
    /// An instant and the same moment in µs since the epoch, to turn schedule times into timers.
    base: (Instant, u64),
    timer: Pin<Box<Sleep>>,
}

impl Publishing {
    fn instant_of(&self, t_us: u64) -> Instant {
        self.base.0 + Duration::from_micros(t_us.saturating_sub(self.base.1))
    }

    fn rearm(&mut self) {
        let at = self.instant_of(self.schedule.at_us(self.next));
        self.timer.as_mut().reset(at);
    }
}

/// Resolves when the next publish is due; never without a schedule.
async fn next_due(publishing: &mut Option<Publishing>) {
    match publishing {
        Some(p) => p.timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// An open connection.
struct Live {
    shared: Rc<Shared>,
    plan: Plan,
    ws: Ws,
    phase: watch::Receiver<Phase>,
    publishing: Option<Publishing>,
}

/// Why serving stopped.
enum End {
    /// The server closed or the socket failed, with the reason.
    Early(String),
    /// The worker asked for the close.
    Asked,
}

impl Live {
    async fn serve(mut self) {
        let end = loop {
            let publishing = self.publishing.is_some();
            tokio::select! {
                msg = self.ws.next() => {
                    if let Err(reason) = self.on_message(msg).await {
                        break End::Early(reason);
                    }
                }
                changed = self.phase.changed() => {
                    let phase = match changed {
                        Ok(()) => *self.phase.borrow_and_update(),
                        Err(_) => Phase::Close,
                    };
                    if self.on_phase(phase) {
                        break End::Asked;
                    }
                }
                _ = next_due(&mut self.publishing), if publishing => {
                    if let Err(reason) = self.publish_due().await {
                        break End::Early(reason);
                    }
                }
            }
        };
        match end {
            End::Early(reason) => {
                self.shared.stats.borrow_mut().trouble.closed(&format!("#{}: {reason}", self.plan.index));
            }
            End::Asked => self.close().await,
        }
    }

    /// Follows a phase change; true when the connection should close.
    fn on_phase(&mut self, phase: Phase) -> bool {
        self.publishing = None;
        match phase {
            Phase::Close => true,
            Phase::Hold => false,
            Phase::Step(step) => {
                if let Some(k) = self.plan.publisher {
                    let schedule = step.publisher(k);
                    let sends = schedule.sends();
                    if !sends.is_empty() {
                        let mut publishing = Publishing {
                            schedule,
                            next: sends.start,
                            end: sends.end,
                            measured: schedule.measured(),
                            base: (Instant::now(), crate::now_us()),
                            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
                        };
                        publishing.rearm();
                        self.publishing = Some(publishing);
                    }
                }
                false
            }
        }
    }

    /// Sends every publish that is due, at most [`SEND_BATCH`] before reading again.
    async fn publish_due(&mut self) -> Result<(), String> {
        let Some(p) = self.publishing.as_mut() else { return Ok(()) };
        let room = self.plan.room.as_deref().unwrap_or_default();
        let now = Instant::now();
        let mut sent = 0;
        while p.next < p.end && sent < SEND_BATCH && p.instant_of(p.schedule.at_us(p.next)) <= now {
            let i = p.next;
            let lag = crate::now_us().saturating_sub(p.schedule.at_us(i));
            let frame = dialect::publish(self.shared.dialect, room, p.schedule.at_us(i), i, &self.shared.pad);
            self.ws.send(Message::text(frame)).await.map_err(|e| format!("publish: {e}"))?;
            if p.measured.contains(&i) {
                let mut stats = self.shared.stats.borrow_mut();
                stats.published += 1;
                stats.send_lag.record(lag);
            }
            p.next += 1;
            sent += 1;
        }
        match p.next < p.end {
            true => p.rearm(),
            false => self.publishing = None,
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), String> {
        match msg {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(bytes))) => {
                self.shared.stats.borrow_mut().trouble.unexpected(&format!("binary frame of {} bytes", bytes.len()));
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => Err(close_reason(frame.as_ref())),
            // WebSocket pings are answered by the library on the next read.
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(format!("read: {e}")),
            None => Err("connection ended".into()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), String> {
        let room = self.plan.room.as_deref();
        match dialect::decode(self.shared.dialect, text) {
            Inbound::Message { room: r, t: Some(t) } if Some(r.as_ref()) == room => {
                // Warm-up messages and stragglers of an earlier step are
                // expected but not measured.
                if self.shared.step.get().is_some_and(|s| s.in_window(t)) {
                    let latency = crate::now_us().saturating_sub(t);
                    let mut stats = self.shared.stats.borrow_mut();
                    stats.deliveries += 1;
                    stats.latency.record(latency);
                }
            }
            Inbound::Presence { room: r } if Some(r.as_ref()) == room => self.shared.stats.borrow_mut().presence.record(),
            Inbound::EnginePing => {
                self.ws.send(Message::text(dialect::SOCKETIO_PONG)).await.map_err(|e| format!("pong: {e}"))?;
            }
            Inbound::Disconnect => return Err(format!("disconnected by the server: {text}")),
            _ => self.shared.stats.borrow_mut().trouble.unexpected(text),
        }
        Ok(())
    }

    /// Closes politely (a Socket.IO client disconnects its namespace first)
    /// and waits a little for the server's answer, so the server sees a
    /// clean close rather than a reset.
    async fn close(mut self) {
        if self.shared.dialect == Dialect::Socketio {
            let _ = self.ws.send(Message::text(dialect::SOCKETIO_DISCONNECT)).await;
        }
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}
