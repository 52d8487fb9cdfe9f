//! The publishers of `recover`: threads of the coordinator that publish into
//! every room on a fixed schedule for the whole run and keep the `seq` each
//! publish was acknowledged with, either through `POST /api/publish` (one
//! kept-alive HTTP connection per thread) or over a WebSocket connection per
//! thread that joins its rooms and publishes with an `id` and `echo: false`.
//!
//! Plain blocking sockets on their own threads: a few thousand publishes a
//! second need no runtime, and a slow answer delays only its own thread. A
//! thread that falls behind sends at once to catch up. A publish that fails
//! is never sent again (the server may have numbered it); it is counted.
//!
//! Each room has one publishing thread, which numbers the room's messages
//! `data.n = 0, 1, ...` in the order it sends them, so `seq - n` is the same
//! for every message of a room: a client can tell a replayed frame that is
//! not the one first sent.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_tungstenite::tungstenite::{self, Message};

use super::api::Api;
use crate::histogram::Micros;
use crate::ipc::{push_sample, room_name};

/// How long a WebSocket publisher waits for its last acknowledgements after the stop.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Longest a blocking WebSocket read waits before the schedule is looked at again.
const READ_SLICE: Duration = Duration::from_millis(20);

/// Where publishes go.
#[derive(Debug, Clone)]
pub enum Via {
    /// `POST /api/publish` at this base URL, with this key.
    Api { base: String, key: Option<String> },
    /// A WebSocket connection to this URL per thread; with a secret, thread
    /// `j` authenticates as `load-<first_index + j>`.
    WebSocket { url: String, target: SocketAddr, secret: Option<String>, first_index: usize },
}

/// What the publishers are to do.
#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    pub rooms: usize,
    /// Publishing threads; thread `j` owns the rooms `r` with `r % threads == j`.
    pub threads: usize,
    /// Publishes per second, all threads together.
    pub rate: f64,
    /// When the first publish is due (µs since the epoch).
    pub t0_us: u64,
    pub payload_bytes: usize,
}

impl PublishPlan {
    /// When thread `j`'s message `i` is due, and the room it goes to.
    pub fn slot(&self, j: usize, i: u64) -> (u64, usize) {
        let global = i * self.threads as u64 + j as u64;
        let at = self.t0_us + (global as f64 * 1e6 / self.rate) as u64;
        let owned = self.rooms_of(j);
        (at, j + (i as usize % owned) * self.threads)
    }

    /// How many rooms thread `j` owns.
    fn rooms_of(&self, j: usize) -> usize {
        (self.rooms + self.threads - 1 - j) / self.threads
    }
}

/// What the publishers did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Publishes acknowledged with a `seq`.
    pub published: u64,
    pub failures: u64,
    pub failure_samples: Vec<String>,
    /// Per room, the last `seq` an acknowledgement named.
    pub last_seq: Vec<Option<u64>>,
    /// Acknowledged `seq`s that did not follow the room's previous one.
    pub seq_jumps: u64,
    pub jump_samples: Vec<String>,
    /// From the scheduled time to the acknowledgement, µs.
    pub ack: Micros,
}

impl Published {
    fn new(rooms: usize) -> Self {
        Self { last_seq: vec![None; rooms], ..Self::default() }
    }

    fn add(&mut self, other: Published) {
        self.published += other.published;
        self.failures += other.failures;
        other.failure_samples.iter().for_each(|s| push_sample(&mut self.failure_samples, s));
        self.seq_jumps += other.seq_jumps;
        other.jump_samples.iter().for_each(|s| push_sample(&mut self.jump_samples, s));
        if self.last_seq.len() < other.last_seq.len() {
            self.last_seq.resize(other.last_seq.len(), None);
        }
        for (mine, theirs) in self.last_seq.iter_mut().zip(other.last_seq) {
            *mine = (*mine).max(theirs);
        }
        self.ack.add(&other.ack);
    }

    fn acked(&mut self, room: usize, seq: u64, at_us: u64) {
        self.published += 1;
        self.ack.record(crate::now_us().saturating_sub(at_us));
        if let Some(previous) = self.last_seq[room] {
            if seq != previous + 1 {
                self.seq_jumps += 1;
                push_sample(&mut self.jump_samples, &format!("{}: seq {seq} after {previous}", room_name(room)));
            }
        }
        self.last_seq[room] = Some(seq);
    }

    fn failed(&mut self, what: &str) {
        self.failures += 1;
        push_sample(&mut self.failure_samples, what);
    }
}

/// The publishing threads of a run; stopped (and joined) when dropped.
pub struct Publishers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Published>>,
}

impl Publishers {
    /// Starts `plan.threads` threads. WebSocket publishers join their rooms
    /// first: this returns once every one has (or has failed to).
    pub fn start(plan: PublishPlan, via: &Via) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut ready = Vec::new();
        for j in 0..plan.threads {
            let stop = stop.clone();
            let via = via.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            ready.push(rx);
            threads.push(std::thread::spawn(move || match via {
                Via::Api { base, key } => {
                    let _ = tx.send(Ok(()));
                    match Api::new(&base, key) {
                        Ok(api) => publish_api(j, plan, api, &stop),
                        Err(e) => {
                            let mut out = Published::new(plan.rooms);
                            out.failed(&e);
                            out
                        }
                    }
                }
                Via::WebSocket { url, target, secret, first_index } => {
                    match WsPublisher::open(j, plan, &url, target, secret.as_deref(), first_index + j) {
                        Ok(publisher) => {
                            let _ = tx.send(Ok(()));
                            publisher.run(&stop)
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("publisher {j}: {e}")));
                            Published::new(plan.rooms)
                        }
                    }
                }
            }));
        }
        let publishers = Self { stop, threads };
        for rx in ready {
            rx.recv_timeout(Duration::from_secs(60))
                .map_err(|_| "a publisher did not get ready within 60 s".to_string())??;
        }
        Ok(publishers)
    }

    /// Stops publishing; returns what was published once every thread is done.
    pub fn stop(mut self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Published::default();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(published) => total.add(published),
                Err(_) => total.failed("a publishing thread panicked"),
            }
        }
        total
    }
}

impl Drop for Publishers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Sleeps until `at_us`, or returns false as soon as `stop` is set.
fn wait_for(at_us: u64, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = crate::now_us();
        if now >= at_us {
            return true;
        }
        std::thread::sleep(Duration::from_micros((at_us - now).min(50_000)));
    }
}

/// The `data` of room message `n`, scheduled at `at_us`.
fn data(n: u64, at_us: u64, pad: &str) -> String {
    format!(r#"{{"n":{n},"t":{at_us},"pad":"{pad}"}}"#)
}

/// Thread `j` over the HTTP API.
fn publish_api(j: usize, plan: PublishPlan, mut api: Api, stop: &AtomicBool) -> Published {
    let mut out = Published::new(plan.rooms);
    if plan.rooms_of(j) == 0 {
        return out;
    }
    let pad = crate::dialect::padding(plan.payload_bytes);
    let mut numbers = vec![0u64; plan.rooms];
    for i in 0.. {
        let (at, room) = plan.slot(j, i);
        if !wait_for(at, stop) {
            break;
        }
        let n = numbers[room];
        numbers[room] += 1;
        let name = room_name(room);
        let body = format!(r#"{{"room":"{name}","data":{}}}"#, data(n, at, &pad));
        let answer = api.request("POST", "/api/publish", Some(&body)).and_then(|(status, text)| {
            match (status, serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["seq"].as_u64())) {
                (200, Some(seq)) => Ok(seq),
                _ => Err(format!("{status} {text}")),
            }
        });
        match answer {
            Ok(seq) => out.acked(room, seq, at),
            Err(reason) => out.failed(&format!("{name} n={n}: {reason}")),
        }
    }
    out
}

type Socket = tungstenite::WebSocket<TcpStream>;

/// A WebSocket publisher joined to its rooms.
struct WsPublisher {
    j: usize,
    plan: PublishPlan,
    ws: Socket,
}

/// The frames a WebSocket publisher reads.
#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    code: Option<String>,
}

impl WsPublisher {
    fn open(
        j: usize,
        plan: PublishPlan,
        url: &str,
        target: SocketAddr,
        secret: Option<&str>,
        index: usize,
    ) -> Result<Self, String> {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let url = match secret {
            Some(secret) => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}token={}", crate::token::mint(secret, index)?)
            }
            None => url.to_string(),
        };
        let (ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| format!("handshake: {e}"))?;
        let mut publisher = Self { j, plan, ws };
        let welcome = publisher.next_reply()?.ok_or("no welcome")?;
        if welcome.kind != "welcome" {
            return Err(format!("{} before welcome", welcome.kind));
        }
        let rooms: Vec<usize> = (j..plan.rooms).step_by(plan.threads).collect();
        for &room in &rooms {
            let join = crate::dialect::join(crate::cli::Dialect::Herald, &room_name(room));
            publisher.ws.send(Message::text(join)).map_err(|e| format!("join: {e}"))?;
        }
        let mut joined = 0;
        while joined < rooms.len() {
            match publisher.next_reply()? {
                Some(r) if r.kind == "joined" => joined += 1,
                Some(r) if r.kind == "error" => return Err(format!("join refused: {:?}", r.code)),
                _ => {}
            }
        }
        Ok(publisher)
    }

    /// The next text frame, parsed; `None` for frames that are not JSON objects of a type.
    fn next_reply(&mut self) -> Result<Option<Reply>, String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Ok(serde_json::from_str(text.as_str()).ok()),
                Ok(Message::Close(frame)) => return Err(format!("closed by the server: {frame:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Publishes on schedule until `stop`, reading acknowledgements between
    /// sends; then waits a little for the last ones.
    fn run(mut self, stop: &AtomicBool) -> Published {
        let mut out = Published::new(self.plan.rooms);
        let pad = crate::dialect::padding(self.plan.payload_bytes);
        let mut numbers = vec![0u64; self.plan.rooms];
        // Publishes sent and not yet acknowledged, by id: (room, scheduled time).
        let mut waiting: HashMap<u64, (usize, u64)> = HashMap::new();
        let mut i = 0u64;
        let mut ack_deadline = None;
        loop {
            let (at, room) = self.plan.slot(self.j, i);
            let now = crate::now_us();
            let stopped = stop.load(Ordering::Relaxed);
            if stopped && ack_deadline.is_none() {
                ack_deadline = Some(Instant::now() + ACK_WAIT);
            }
            if ack_deadline.is_some_and(|d| waiting.is_empty() || Instant::now() >= d) {
                break;
            }
            if !stopped && now >= at {
                let n = numbers[room];
                numbers[room] += 1;
                let frame = format!(
                    r#"{{"type":"publish","room":"{}","data":{},"echo":false,"id":{i}}}"#,
                    room_name(room),
                    data(n, at, &pad)
                );
                if let Err(e) = self.ws.send(Message::text(frame)) {
                    out.failed(&format!("publisher {}: send: {e}", self.j));
                    break;
                }
                waiting.insert(i, (room, at));
                i += 1;
                // Read what has come anyway, without waiting, every few sends.
                if !i.is_multiple_of(16) {
                    continue;
                }
            }
            let wait = match stopped {
                true => READ_SLICE,
                false => Duration::from_micros(at.saturating_sub(crate::now_us())).clamp(Duration::from_micros(100), READ_SLICE),
            };
            let _ = self.ws.get_mut().set_read_timeout(Some(wait));
            match self.ws.read() {
                Ok(Message::Text(text)) => self.on_reply(text.as_str(), &mut waiting, &mut out),
                Ok(Message::Close(frame)) => {
                    out.failed(&format!("publisher {}: closed by the server: {frame:?}", self.j));
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => {
                    out.failed(&format!("publisher {}: read: {e}", self.j));
                    break;
                }
            }
        }
        for (id, (room, _)) in waiting {
            out.failed(&format!("{} id {id}: no acknowledgement", room_name(room)));
        }
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        out
    }

    fn on_reply(&self, text: &str, waiting: &mut HashMap<u64, (usize, u64)>, out: &mut Published) {
        let Ok(reply) = serde_json::from_str::<Reply>(text) else { return };
        let Some((room, at)) = reply.id.and_then(|id| waiting.remove(&id)) else { return };
        match (reply.kind.as_str(), reply.seq) {
            ("ack", Some(seq)) => out.acked(room, seq, at),
            _ => out.failed(&format!("{}: {text}", reply.room.unwrap_or_else(|| room_name(room)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_every_room_in_turn_at_the_rate() {
        let plan = PublishPlan { rooms: 5, threads: 2, rate: 100.0, t0_us: 1_000_000, payload_bytes: 100 };
        // Thread 0 owns rooms 0, 2, 4; thread 1 owns 1, 3.
        let rooms0: Vec<usize> = (0..6).map(|i| plan.slot(0, i).1).collect();
        assert_eq!(rooms0, vec![0, 2, 4, 0, 2, 4]);
        let rooms1: Vec<usize> = (0..4).map(|i| plan.slot(1, i).1).collect();
        assert_eq!(rooms1, vec![1, 3, 1, 3]);
        // Together one publish every 10 ms, the threads interleaved.
        let mut times: Vec<u64> = (0..50).flat_map(|i| [plan.slot(0, i).0, plan.slot(1, i).0]).collect();
        times.sort_unstable();
        assert_eq!(times[0], 1_000_000);
        assert!(times.windows(2).all(|w| w[1] - w[0] == 10_000), "{times:?}");
        let lone = PublishPlan { rooms: 1, threads: 2, ..plan };
        assert_eq!(lone.rooms_of(1), 0);
    }

    #[test]
    fn acknowledgements_are_kept_per_room_and_jumps_counted() {
        let mut a = Published::new(2);
        a.acked(0, 1, 0);
        a.acked(0, 2, 0);
        a.acked(0, 4, 0);
        assert_eq!(a.seq_jumps, 1);
        assert_eq!(a.jump_samples, vec!["load-0: seq 4 after 2".to_string()]);
        let mut b = Published::new(2);
        b.acked(1, 7, 0);
        b.failed("x");
        a.add(b);
        assert_eq!(a.published, 4);
        assert_eq!(a.failures, 1);
        assert_eq!(a.last_seq, vec![Some(4), Some(7)]);
    }
}
