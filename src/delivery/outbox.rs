//! A connection's way out: the one place bytes for its client are written.
//!
//! Rooms, presence, the cluster link and the connection itself all write
//! through an [`Outbox`]. While the connection's queue is empty, a frame is
//! written to the socket right there, on the delivering thread, with one
//! non-blocking `send`: no hop to the connection's thread, no wake-up, no
//! copy. Only what the kernel does not take waits, in a queue that costs
//! nothing while empty; the connection's owner is woken once when the queue
//! becomes non-empty, and writes everything queued meanwhile in one `writev`.
//!
//! The queue is bounded by frames (`limits.outbound_queue`) and by bytes
//! (`limits.outbound_queue_bytes`), whichever is reached first: a frame that
//! does not fit makes the connection a slow consumer. Its owner is asked to
//! close it with 4008 (the close frame is the one write allowed past the
//! bound), and ends it after a grace period if even that cannot get through.
//!
//! A room whose namespace says otherwise keeps its frames from making a
//! slow consumer (see [`Outbox::deliver_in`]): under `drop` a frame that
//! does not fit is skipped for this connection; under `latest` the newest
//! message that did not fit waits in one slot per room, outside the queue,
//! and goes in as soon as the queue has room again.
//!
//! The socket's descriptor sits under the same lock as the queue and is
//! cleared by the owner before the socket is closed, so a write never lands
//! on a descriptor number that another connection has since been given.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Wake, Waker};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Place, Wakeups};
use crate::config::SlowConsumer;
use crate::ids::RoomName;
use crate::metrics::{Fault, Metrics};
use crate::protocol::{close, Encoded, ServerKind};
use crate::metrics::TransportKind;

/// How a delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the socket, or queued for it.
    Queued,
    /// The connection's queue is full: it is now a slow consumer, on its way out.
    Full,
    /// The connection is gone.
    Closed,
    /// Did not fit, and was skipped under its room's `drop` (or `latest`)
    /// policy: the connection stays.
    Skipped,
    /// Did not fit, and waits in its room's `latest` slot: the connection stays.
    Kept,
}

/// The queue bounds every connection of a node shares.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames: u32,
    pub bytes: u32,
}

impl Bounds {
    pub fn new(frames: usize, bytes: usize) -> Self {
        Self { frames: frames.clamp(1, u32::MAX as usize) as u32, bytes: bytes.clamp(1, u32::MAX as usize) as u32 }
    }
}

/// A message to a connection actor from outside it, queued in its outbox
/// (which keeps one: the first close asked for wins, as a connection closes
/// once, and a crash overrides it) and handled by `connection::core`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnMsg {
    Close { code: u16, reason: &'static str },
    /// Panic while handling this (fault injection).
    Crash,
}

/// Where frames for one connection go. Cheap to clone (a reference count).
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    out: Mutex<Out>,
    /// The worker loop that polls this connection, and where (see `connection::reactor`).
    owner: OnceLock<(Arc<Wakeups>, Place)>,
    /// Whether the connection is on its worker's queue already.
    scheduled: AtomicBool,
    bounds: Bounds,
    /// The frame kinds the connection's transport writes, one bit per [`ServerKind`].
    carried: u16,
    transport: TransportKind,
}

// One bit per frame kind in `Shared::carried`.
const _: () = assert!(ServerKind::ALL.len() <= u16::BITS as usize);

/// The part of a connection behind its lock, kept small: every idle
/// connection has one.
struct Out {
    /// The socket, or -1 once the connection has ended (or before it has one).
    fd: RawFd,
    queued_bytes: u32,
    /// Bytes the socket has not taken yet, oldest first; the first may be
    /// the unwritten rest of a frame. Allocated only while anything waits.
    // Boxed: 8 bytes per idle connection instead of 32.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Bytes>>>,
    /// The close code asked for ([`CRASH`] for a crash; 0: nothing).
    request: u16,
    /// Everything is queued and nothing written until uncorked: the
    /// response head of an SSE stream must precede what its rooms deliver.
    corked: bool,
    /// Nothing more may be written: the last bytes are queued.
    sealed: bool,
    /// Set once: found too slow, or the socket failed.
    slow: bool,
    broken: bool,
    /// A Socket.IO session over HTTP long polling: no socket of its own;
    /// what is written waits in the queue, as Engine.IO packets, for the
    /// client's next poll ([`Outbox::take_polled`]).
    polling: bool,
    /// What few connections need, boxed so the rest pay 8 bytes for it.
    extra: Option<Box<Extra>>,
}

/// The rarer parts of a connection's outbox.
#[derive(Default)]
struct Extra {
    /// Without a socket: frames kept in memory instead (tests and benches).
    record: Option<Recorder>,
    /// An SSE stream's position in each of its rooms, by room name, which
    /// every event's `id:` records (see [`Outbox::track`]).
    positions: Vec<Tracked>,
    /// The newest message of each `latest` room that did not fit, oldest
    /// slot first: at most one per room, written once the queue has room.
    latest: Vec<(RoomName, Encoded)>,
}

/// One room's position in an SSE stream or a Socket.IO session: none
/// until its join placed it.
struct Tracked {
    room: crate::ids::RoomName,
    at: Option<(Arc<str>, u64)>,
    /// Where the join placed it (a Socket.IO session recovers a room it
    /// got no message of since from here).
    joined: u64,
}

impl Extra {
    /// The event id of the stream as it stands, once it has rooms.
    fn stream_id(&self) -> Option<String> {
        if self.positions.is_empty() {
            return None;
        }
        let positions = self.positions.iter().map(|t| (&*t.room, t.at.as_ref().map(|(epoch, seq)| (&**epoch, *seq))));
        Some(crate::protocol::framing::stream_id(positions))
    }

    fn tracked(&mut self, room: &str) -> Option<&mut Tracked> {
        let at = self.positions.binary_search_by(|t| (*t.room).cmp(room)).ok()?;
        Some(&mut self.positions[at])
    }
}

/// `frame` as an SSE event, its `id:` the stream's position in every room
/// once `frame` (a message) is counted in: worked out under the lock that
/// orders the writes, so ids only move forward.
fn event_bytes(extra: Option<&mut Extra>, frame: &Encoded) -> Bytes {
    let id = match extra {
        Some(extra) if !extra.positions.is_empty() => {
            if let Some((room, seq)) = frame.message_position() {
                if let Some((_, at)) = extra.tracked(room).and_then(|t| t.at.as_mut()) {
                    *at = (*at).max(seq);
                }
            }
            extra.stream_id()
        }
        _ => None,
    };
    crate::protocol::framing::event_with_id(id.as_deref(), frame.text())
}

/// `frame` as the Engine.IO packet a Socket.IO client is sent (see
/// [`crate::protocol::socketio`]), framed as a WebSocket message unless the
/// session polls; `None` for a frame that goes to no Socket.IO client (a
/// reply nobody asked for). A message carries the session's position in
/// every room as its offset, worked out as [`event_bytes`] does.
fn sio_bytes(extra: Option<&mut Extra>, polling: bool, frame: &Encoded) -> Option<Bytes> {
    let offset = match extra {
        Some(extra) if frame.kind == ServerKind::Message && !extra.positions.is_empty() => {
            if let Some((room, seq)) = frame.message_position() {
                if let Some((_, at)) = extra.tracked(room).and_then(|t| t.at.as_mut()) {
                    *at = (*at).max(seq);
                }
            }
            extra.stream_id()
        }
        _ => None,
    };
    crate::protocol::socketio::server_packet(frame, offset.as_deref(), !polling)
}

/// [`Out::request`] for a crash.
const CRASH: u16 = u16::MAX;

/// What an outbox without a socket keeps: every frame written, as text, and
/// every close request as `close <code>`, up to `capacity` entries held at
/// once, after which it behaves as a stalled client's.
#[derive(Clone)]
struct Recorder {
    entries: Arc<Mutex<Vec<String>>>,
    capacity: usize,
}

impl Outbox {
    /// An outbox for a connection over `fd` carried by `transport`.
    pub fn new(fd: RawFd, transport: TransportKind, carries: impl Fn(ServerKind) -> bool, bounds: Bounds) -> Self {
        let carried = ServerKind::ALL.iter().filter(|&&kind| carries(kind)).fold(0, |bits, &kind| bits | 1 << kind as u16);
        let out = Out {
            fd,
            queue: None,
            queued_bytes: 0,
            request: 0,
            corked: false,
            sealed: false,
            slow: false,
            broken: false,
            polling: false,
            extra: None,
        };
        let shared = Shared {
            out: Mutex::new(out),
            owner: OnceLock::new(),
            scheduled: AtomicBool::new(false),
            bounds,
            carried,
            transport,
        };
        Self { shared: Arc::new(shared) }
    }

    /// Queues `frame` without ever waiting or growing the queue past its
    /// bounds; a frame that does not fit turns the connection into a slow
    /// consumer. A frame the connection's transport does not carry counts as
    /// queued, and is not.
    pub fn deliver(&self, frame: &Encoded, metrics: &Metrics) -> Delivery {
        self.counted(frame, self.deliver_uncounted(frame, metrics), metrics)
    }

    /// [`Self::deliver_in_uncounted`], counted as [`Self::deliver`] counts.
    pub fn deliver_in(&self, frame: &Encoded, room: &RoomName, policy: SlowConsumer, metrics: &Metrics) -> Delivery {
        self.counted(frame, self.deliver_in_uncounted(frame, room, policy, metrics), metrics)
    }

    /// Counts `frame` in `herald_frames_sent_total` and the bytes sent when
    /// `delivery` queued it for this connection's client.
    fn counted(&self, frame: &Encoded, delivery: Delivery, metrics: &Metrics) -> Delivery {
        if delivery == Delivery::Queued && self.carries(frame.kind) {
            metrics.frames_out(frame.kind, 1);
            metrics.bytes_out(self.shared.transport, frame.text().len());
        }
        delivery
    }

    /// [`Self::deliver`], leaving `herald_frames_sent_total` and the bytes
    /// sent to the caller, which counts a whole fan-out at once.
    pub fn deliver_uncounted(&self, frame: &Encoded, metrics: &Metrics) -> Delivery {
        if !self.carries(frame.kind) {
            return Delivery::Queued;
        }
        let delivery = match self.shared.transport {
            TransportKind::WebSocket => self.write_shared(frame.wire(), false),
            TransportKind::Sse => self.write_event(frame),
            TransportKind::SocketIo => {
                let mut out = self.shared.out.lock();
                self.write_sio_locked(&mut out, frame, None)
            }
        };
        if delivery == Delivery::Full {
            metrics.slow_consumer_drops(SlowConsumer::Disconnect, 1);
            self.slow_consumer(metrics);
        }
        delivery
    }

    /// [`Self::deliver_uncounted`] of a frame of `room`, whose namespace
    /// says what a frame that does not fit does: under `disconnect` it
    /// makes the connection a slow consumer, as any frame; under `drop` it
    /// is skipped for this connection; under `latest` a message takes the
    /// room's slot (the one it displaces is dropped) and other frames are
    /// skipped. While a room's slot is taken, its next messages replace
    /// the one there rather than overtake it.
    pub fn deliver_in_uncounted(
        &self,
        frame: &Encoded,
        room: &RoomName,
        policy: SlowConsumer,
        metrics: &Metrics,
    ) -> Delivery {
        if policy == SlowConsumer::Disconnect {
            return self.deliver_uncounted(frame, metrics);
        }
        if !self.carries(frame.kind) {
            return Delivery::Queued;
        }
        let keep = policy == SlowConsumer::Latest && frame.kind == ServerKind::Message;
        let mut out = self.shared.out.lock();
        if keep {
            let waiting = out.extra.as_deref_mut().and_then(|e| e.latest.iter_mut().find(|(r, _)| r == room));
            if let Some((_, waiting)) = waiting {
                *waiting = frame.clone();
                drop(out);
                metrics.slow_consumer_drops(policy, 1);
                metrics.latest_replaced.inc();
                return Delivery::Kept;
            }
        }
        let delivery = match self.shared.transport {
            TransportKind::WebSocket => self.write_locked(&mut out, frame.wire(), false, None),
            TransportKind::SocketIo => self.write_sio_locked(&mut out, frame, Some(room)),
            TransportKind::Sse => {
                // An SSE stream's ids must not claim a message it did not
                // get: its position in the room goes back if it is skipped.
                let before = out.extra.as_deref_mut().and_then(|e| e.tracked(room)).and_then(|t| t.at.clone());
                let delivery = self.write_event_locked(&mut out, frame);
                if delivery == Delivery::Full {
                    if let Some(tracked) = out.extra.as_deref_mut().and_then(|e| e.tracked(room)) {
                        tracked.at = before;
                    }
                }
                delivery
            }
        };
        // A connection already found slow is on its way out: its frames
        // are lost whatever the room.
        if delivery != Delivery::Full || out.slow {
            return delivery;
        }
        if keep {
            out.extra.get_or_insert_default().latest.push((room.clone(), frame.clone()));
            return Delivery::Kept;
        }
        drop(out);
        metrics.slow_consumer_drops(policy, 1);
        Delivery::Skipped
    }

    /// Forgets the message waiting in `room`'s `latest` slot, if any: the
    /// connection left the room. (A connection that never reads and goes
    /// from room to room so holds one slot per room it is in, no more.) A
    /// Socket.IO session forgets its position there too, unless it is
    /// ending (a room drops a member it can no longer write to): the
    /// position is what its client recovers from.
    pub fn forget_room(&self, room: &RoomName) {
        let mut out = self.shared.out.lock();
        let ending = out.sealed || out.slow || out.broken || (out.fd < 0 && !out.polling);
        if let Some(extra) = out.extra.as_deref_mut() {
            extra.latest.retain(|(r, _)| r != room);
            if self.shared.transport == TransportKind::SocketIo && !ending {
                extra.positions.retain(|t| t.room != *room);
            }
        }
    }

    /// [`Self::write_locked`] of `frame` as a Socket.IO packet (see
    /// [`sio_bytes`]); a frame of `room` that does not fit leaves the
    /// session's position there as it was.
    fn write_sio_locked(&self, out: &mut Out, frame: &Encoded, room: Option<&RoomName>) -> Delivery {
        let before = room.and_then(|room| out.extra.as_deref_mut()?.tracked(room)?.at.clone());
        let polling = out.polling;
        let Some(bytes) = sio_bytes(out.extra.as_deref_mut(), polling, frame) else { return Delivery::Queued };
        let delivery = self.write_locked(out, &bytes, false, Some(frame.text()));
        if delivery == Delivery::Full {
            if let Some(tracked) = room.and_then(|room| out.extra.as_deref_mut()?.tracked(room)) {
                tracked.at = before;
            }
        }
        delivery
    }

    /// Writes `bytes` as they are: to the socket while nothing is queued,
    /// else to the back of the queue. `past_bounds` lets a close frame in
    /// when the queue is full.
    pub fn write(&self, bytes: Bytes, past_bounds: bool) -> Delivery {
        self.write_shared(&bytes, past_bounds)
    }

    /// [`Self::write`] of bytes shared with other connections: they are
    /// referenced again only if they have to wait in the queue.
    fn write_shared(&self, bytes: &Bytes, past_bounds: bool) -> Delivery {
        let mut out = self.shared.out.lock();
        self.write_locked(&mut out, bytes, past_bounds, None)
    }

    /// Writes `frame` as an SSE event (see [`event_bytes`]).
    fn write_event(&self, frame: &Encoded) -> Delivery {
        let mut out = self.shared.out.lock();
        self.write_event_locked(&mut out, frame)
    }

    fn write_event_locked(&self, out: &mut Out, frame: &Encoded) -> Delivery {
        let bytes = event_bytes(out.extra.as_deref_mut(), frame);
        self.write_locked(out, &bytes, false, Some(frame.text()))
    }

    /// [`Self::write_shared`] under the lock; a recorder keeps `text`, or
    /// the text of the WebSocket frame `bytes`.
    fn write_locked(&self, out: &mut Out, bytes: &Bytes, past_bounds: bool, text: Option<&str>) -> Delivery {
        if out.sealed {
            return Delivery::Closed;
        }
        if out.slow && !past_bounds {
            return Delivery::Full;
        }
        if let Some(recorder) = out.extra.as_ref().and_then(|e| e.record.as_ref()) {
            let text = text.map_or_else(|| crate::protocol::framing::payload_text(bytes), str::to_owned);
            return recorder.keep(text, past_bounds);
        }
        if (out.fd < 0 && !out.polling) || out.broken {
            return Delivery::Closed;
        }
        let len = bytes.len();
        if out.polling && out.queue.is_none() && !out.corked {
            // The session's owner hands it to a waiting poll.
            self.shared.wake_owner();
        }
        if out.queue.is_some() || out.corked || out.polling {
            let bounds = self.shared.bounds;
            let frames = out.queue.as_ref().map_or(0, |q| q.len());
            let fits = frames < bounds.frames as usize && out.queued_bytes as usize + len <= bounds.bytes as usize;
            if !fits && !past_bounds {
                return Delivery::Full;
            }
            out.queued_bytes = out.queued_bytes.saturating_add(len as u32);
            out.queue.get_or_insert_default().push_back(bytes.clone());
            return Delivery::Queued;
        }
        let written = match send(out.fd, bytes) {
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(_) => {
                out.broken = true;
                self.shared.wake_owner();
                return Delivery::Closed;
            }
        };
        if written < len {
            out.queued_bytes = (len - written) as u32;
            out.queue.get_or_insert_default().push_back(bytes.slice(written..));
            self.shared.wake_owner();
        }
        Delivery::Queued
    }

    /// Whether frames of `kind` are written to this connection's client.
    pub fn carries(&self, kind: ServerKind) -> bool {
        self.shared.carried & 1 << kind as u16 != 0
    }

    /// Frames (or their unwritten rests) waiting for the socket.
    pub fn queue_depth(&self) -> u32 {
        self.shared.out.lock().queue.as_ref().map_or(0, |q| q.len() as u32)
    }

    /// Asks the connection to close with `code` (and that code's reason,
    /// [`close::reason`]), even when its queue is full.
    pub fn close(&self, code: u16) {
        self.ask(code);
    }

    /// Makes the connection panic while it handles this (fault injection).
    pub fn crash(&self) {
        self.ask(CRASH);
    }

    fn ask(&self, request: u16) {
        let mut out = self.shared.out.lock();
        if let Some(recorder) = out.extra.as_ref().and_then(|e| e.record.as_ref()) {
            let text = match request {
                CRASH => "crash".into(),
                code => format!("close {code}"),
            };
            recorder.keep(text, true);
        }
        if out.request == 0 || request == CRASH {
            out.request = request;
        }
        self.shared.wake_owner();
    }

    /// Turns the connection into a slow consumer: counted once, and asked to
    /// close with 4008.
    pub fn slow_consumer(&self, metrics: &Metrics) {
        {
            let mut out = self.shared.out.lock();
            if out.slow {
                return;
            }
            out.slow = true;
            // What waited in `latest` slots goes with the connection.
            if let Some(extra) = out.extra.as_deref_mut() {
                extra.latest = Vec::new();
            }
        }
        metrics.connection_dropped(Fault::SlowConsumer);
        self.close(close::SLOW_CONSUMER);
    }

    pub fn is_slow(&self) -> bool {
        self.shared.out.lock().slow
    }

    // ---- for the connection's owner ------------------------------------

    /// Takes the message waiting for the connection, if any.
    pub(crate) fn take_msg(&self) -> Option<ConnMsg> {
        match std::mem::take(&mut self.shared.out.lock().request) {
            0 => None,
            CRASH => Some(ConnMsg::Crash),
            code => Some(ConnMsg::Close { code, reason: close::reason(code) }),
        }
    }

    /// Ties the outbox to the worker loop that polls its connection.
    pub(crate) fn attach(&self, wakeups: Arc<Wakeups>, place: Place) {
        let _ = self.shared.owner.set((wakeups, place));
    }

    /// The connection's waker: it puts the connection on its worker's queue.
    pub(crate) fn waker(&self) -> Waker {
        Waker::from(self.shared.clone())
    }

    /// Called as the connection is polled: a wake from now on queues it again.
    pub(crate) fn unschedule(&self) {
        self.shared.scheduled.store(false, Ordering::Release);
    }

    /// Whether anything waits in the queue to be flushed.
    pub(crate) fn has_queued(&self) -> bool {
        let out = self.shared.out.lock();
        out.queue.is_some() && !out.corked && !out.polling
    }

    /// Writes as much of the queue as the socket takes, in one `writev`
    /// per up to [`IOV_MAX`] frames: `Ok` once it is empty, `WouldBlock`
    /// while the socket takes no more, another error once the socket failed.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        let mut out = self.shared.out.lock();
        loop {
            if out.broken || out.fd < 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            if out.corked {
                return Ok(());
            }
            let fd = out.fd;
            let Some(queue) = out.queue.as_mut() else { return Ok(()) };
            let written = {
                let mut slices = [IoSlice::new(&[]); IOV_MAX];
                let mut count = 0;
                for (slot, bytes) in slices.iter_mut().zip(queue.iter()) {
                    *slot = IoSlice::new(bytes);
                    count += 1;
                }
                writev(fd, &slices[..count])
            };
            match written {
                Ok(mut n) => {
                    let taken = n as u32;
                    while n > 0 {
                        let Some(front) = queue.front_mut() else { break };
                        if front.len() <= n {
                            n -= front.len();
                            queue.pop_front();
                        } else {
                            *front = front.slice(n..);
                            n = 0;
                        }
                    }
                    if queue.is_empty() {
                        // A burst is over: the queue goes back.
                        out.queue = None;
                    }
                    out.queued_bytes = out.queued_bytes.saturating_sub(taken);
                    self.release_latest(&mut out);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Err(error),
                Err(error) => {
                    out.broken = true;
                    return Err(error);
                }
            }
        }
    }

    /// Moves the messages waiting in `latest` slots into the queue, oldest
    /// slot first, as far as the queue's bounds let them.
    /// Nothing goes after a close: a connection found slow (its 4008 is
    /// queued) or sealed releases nothing.
    fn release_latest(&self, out: &mut Out) {
        if out.slow || out.sealed {
            return;
        }
        let Out { queue, queued_bytes, extra, polling, .. } = out;
        let Some(extra) = extra.as_deref_mut() else { return };
        let bounds = self.shared.bounds;
        while let Some((room, frame)) = extra.latest.first() {
            let frames = queue.as_ref().map_or(0, |q| q.len());
            let (room, frame) = (room.clone(), frame.clone());
            // An SSE event's id counts the message in: put back if it waits on.
            let before = extra.tracked(&room).and_then(|t| t.at.clone());
            let bytes = match self.shared.transport {
                TransportKind::WebSocket => frame.wire().clone(),
                TransportKind::Sse => event_bytes(Some(extra), &frame),
                TransportKind::SocketIo => match sio_bytes(Some(extra), *polling, &frame) {
                    Some(bytes) => bytes,
                    None => {
                        extra.latest.remove(0);
                        continue;
                    }
                },
            };
            // An empty queue takes it whatever its size, as a socket would.
            let fits = frames == 0
                || (frames < bounds.frames as usize && *queued_bytes as usize + bytes.len() <= bounds.bytes as usize);
            if !fits {
                if let Some(tracked) = extra.tracked(&room) {
                    tracked.at = before;
                }
                return;
            }
            extra.latest.remove(0);
            *queued_bytes = queued_bytes.saturating_add(bytes.len() as u32);
            queue.get_or_insert_default().push_back(bytes);
        }
    }

    /// Holds every write in the queue until [`Self::uncork`]: the first
    /// bytes of a connection (its 101, its response head) must precede
    /// what rooms deliver to it while it opens.
    pub(crate) fn cork(&self) {
        self.shared.out.lock().corked = true;
    }

    /// Writes `first` (if any), then everything held since [`Self::cork`].
    pub(crate) fn uncork(&self, first: Option<Bytes>) {
        let mut out = self.shared.out.lock();
        if let Some(first) = first {
            out.queued_bytes = out.queued_bytes.saturating_add(first.len() as u32);
            out.queue.get_or_insert_default().push_front(first);
        }
        out.corked = false;
        self.shared.wake_owner();
    }

    /// Opens an SSE stream: [`Self::uncork`] with its response `head`
    /// first. After the events held meanwhile comes an event with only the
    /// stream's id, its position in every room once all are joined (an
    /// event held earlier may predate a room's join), so a client that
    /// reconnects before its next message still resumes from here.
    pub(crate) fn start(&self, head: Bytes) {
        {
            let mut out = self.shared.out.lock();
            if let Some(id) = out.extra.as_ref().and_then(|e| e.stream_id()) {
                let event = crate::protocol::framing::id_event(&id);
                out.queued_bytes = out.queued_bytes.saturating_add(event.len() as u32);
                out.queue.get_or_insert_default().push_back(event);
            }
        }
        self.uncork(Some(head));
    }

    /// The queue bounds of the connection.
    pub fn bounds(&self) -> Bounds {
        self.shared.bounds
    }

    /// Whether the connection's events record its position in each room
    /// (an SSE stream): a room then tells it where it starts with
    /// [`Self::track`] instead of a `joined`.
    pub fn keeps_positions(&self) -> bool {
        self.shared.transport == TransportKind::Sse
    }

    /// Whether rooms tell the connection where each join placed it
    /// ([`Self::track`]): an SSE stream, whose events' ids carry it, and a
    /// Socket.IO session, whose messages' offsets do.
    pub fn tracks_positions(&self) -> bool {
        matches!(self.shared.transport, TransportKind::Sse | TransportKind::SocketIo)
    }

    /// The rooms of an SSE stream, each to be placed by [`Self::track`]
    /// (or, resuming, at `Some((epoch, seq))` until then).
    pub fn expect_rooms<'a>(&self, rooms: impl Iterator<Item = (&'a crate::ids::RoomName, Option<(&'a str, u64)>)>) {
        for (room, at) in rooms {
            self.place(room, at.map(|(epoch, seq)| (Arc::from(epoch), seq)));
        }
    }

    /// Sets the connection's position in `room`: numbering `epoch` (the
    /// room's own, shared), up to `seq`, where its join placed it.
    pub fn track(&self, room: &crate::ids::RoomName, epoch: Arc<str>, seq: u64) {
        self.place(room, Some((epoch, seq)));
    }

    fn place(&self, room: &crate::ids::RoomName, at: Option<(Arc<str>, u64)>) {
        let mut out = self.shared.out.lock();
        let extra = out.extra.get_or_insert_default();
        let joined = at.as_ref().map_or(0, |(_, seq)| *seq);
        match extra.positions.binary_search_by(|t| t.room.cmp(room)) {
            Ok(i) => {
                extra.positions[i].at = at;
                extra.positions[i].joined = joined;
            }
            Err(i) => {
                // Most connections are in a room or two: room for one more,
                // not the four a `Vec` starts with.
                extra.positions.reserve_exact(1);
                extra.positions.insert(i, Tracked { room: room.clone(), at, joined })
            }
        }
    }

    /// Drops everything held since [`Self::cork`] and writes `bytes` alone,
    /// the last bytes of the connection.
    pub(crate) fn refuse(&self, bytes: Bytes) {
        let mut out = self.shared.out.lock();
        out.queued_bytes = bytes.len() as u32;
        out.queue = Some(Box::new(VecDeque::from([bytes])));
        out.corked = false;
        out.sealed = true;
        self.shared.wake_owner();
    }

    pub fn transport(&self) -> TransportKind {
        self.shared.transport
    }

    // ---- Socket.IO sessions (see `crate::socketio`) ---------------------

    /// Makes this outbox a long-polling session's: no socket, everything
    /// queued for the client's polls.
    pub(crate) fn set_polling(&self) {
        self.shared.out.lock().polling = true;
    }

    /// Whether packets wait for a poll.
    pub(crate) fn has_polled(&self) -> bool {
        let out = self.shared.out.lock();
        out.polling && out.queue.is_some()
    }

    /// Writes one Engine.IO packet of the session's own (its open packet, a
    /// ping, a namespace reply), framed for the transport it is on now.
    pub(crate) fn write_packet(&self, packet: &[u8], past_bounds: bool) -> Delivery {
        let mut out = self.shared.out.lock();
        let bytes = crate::protocol::socketio::framed(packet, !out.polling);
        self.write_locked(&mut out, &bytes, past_bounds, None)
    }

    /// Takes every packet waiting for a polling client, as one response
    /// body (packets separated by the record separator, `0x1e`); `None`
    /// while nothing waits. Messages waiting in `latest` slots go into the
    /// next one.
    pub(crate) fn take_polled(&self) -> Option<Bytes> {
        let mut out = self.shared.out.lock();
        if out.corked || !out.polling {
            return None;
        }
        let queue = out.queue.take()?;
        out.queued_bytes = 0;
        self.release_latest(&mut out);
        Some(crate::protocol::socketio::payload(queue.into_iter()))
    }

    /// Puts a body the poll that took it could not deliver back in front
    /// of the queue (its client went away mid-poll), packet by packet.
    pub(crate) fn unpoll(&self, body: Bytes) {
        let mut out = self.shared.out.lock();
        out.queued_bytes = out.queued_bytes.saturating_add(body.len() as u32);
        let queue = out.queue.get_or_insert_default();
        let packets = crate::protocol::socketio::packets(&body);
        for packet in packets.into_iter().rev() {
            queue.push_front(packet);
        }
    }

    /// Drops what is held since [`Self::cork`] (a Socket.IO session that
    /// was not recovered: what its rooms replayed is not for it).
    pub(crate) fn discard_held(&self) {
        let mut out = self.shared.out.lock();
        if out.corked {
            out.queue = None;
            out.queued_bytes = 0;
        }
    }

    /// Moves a polling session onto the WebSocket `fd` it upgraded to: what
    /// waits for a poll is framed for the socket, and goes first.
    pub(crate) fn upgrade(&self, fd: RawFd) {
        let mut out = self.shared.out.lock();
        out.polling = false;
        out.fd = fd;
        if let Some(queue) = out.queue.as_mut() {
            for packet in queue.iter_mut() {
                *packet = crate::protocol::socketio::reframed(packet);
            }
            out.queued_bytes = queue.iter().map(|b| b.len() as u32).sum();
        }
        self.shared.wake_owner();
    }

    /// Whether `other` is this very outbox.
    pub(crate) fn is(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Has the connection's owner poll it.
    pub(crate) fn wake(&self) {
        self.shared.wake_owner();
    }

    /// Where each room's join placed the session, with the epoch: what a
    /// Socket.IO session's recovery starts from for a room whose messages
    /// its client's offset does not mention.
    pub(crate) fn joined_positions(&self) -> Vec<(RoomName, Arc<str>, u64)> {
        let out = self.shared.out.lock();
        let Some(extra) = out.extra.as_deref() else { return Vec::new() };
        extra
            .positions
            .iter()
            .filter_map(|t| t.at.as_ref().map(|(epoch, _)| (t.room.clone(), epoch.clone(), t.joined)))
            .collect()
    }

    /// Forgets the socket: called by the owner before it closes it.
    pub(crate) fn release(&self) {
        let mut out = self.shared.out.lock();
        out.fd = -1;
        out.queue = None;
        out.queued_bytes = 0;
    }

    /// An outbox without a socket whose writes and requests are kept in
    /// memory as text, at most `capacity` at once (tests and benches).
    #[doc(hidden)]
    pub fn recorder(
        transport: TransportKind,
        carries: impl Fn(ServerKind) -> bool,
        capacity: usize,
    ) -> (Self, Arc<Mutex<Vec<String>>>) {
        let outbox = Self::new(-1, transport, carries, Bounds::new(usize::MAX, usize::MAX));
        let entries = Arc::new(Mutex::new(Vec::new()));
        outbox.shared.out.lock().extra = Some(Box::new(Extra {
            record: Some(Recorder { entries: entries.clone(), capacity }),
            ..Extra::default()
        }));
        (outbox, entries)
    }
}

impl Recorder {
    fn keep(&self, entry: String, past_bounds: bool) -> Delivery {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !past_bounds {
            return Delivery::Full;
        }
        entries.push(entry);
        Delivery::Queued
    }
}

impl Shared {
    /// Has the connection's worker poll it (once, however often woken).
    fn wake_owner(&self) {
        if let Some((wakeups, place)) = self.owner.get() {
            if !self.scheduled.swap(true, Ordering::AcqRel) {
                wakeups.wake(*place);
            }
        }
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_owner();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_owner();
    }
}

/// Frames written in one `writev` at most.
const IOV_MAX: usize = 64;

fn send(fd: RawFd, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `fd` is this connection's open socket (the caller holds the
    // lock that keeps it from being released), and `bytes` is valid for reads.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn writev(fd: RawFd, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
    // SAFETY: an all-zero `msghdr` is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr().cast_mut().cast();
    msg.msg_iovlen = slices.len() as _;
    // SAFETY: as in `send`; `IoSlice` is ABI-compatible with `iovec`, and
    // `msg` points at `slices` only for this call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The bytes of one connection's outbox, as allocated (for the size guard).
#[cfg(test)]
pub(crate) fn shared_size() -> usize {
    std::mem::size_of::<Shared>()
}

#[cfg(test)]
mod tests;
