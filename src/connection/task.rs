//! The connection actor's runner: a state machine per connection, driven by
//! the loop of the worker that accepted its socket ([`super::reactor`]),
//! owning the socket and the [`Connection`] (the actor, see
//! `crate::supervisor` for the idiom every actor shares).
//!
//! Why a state machine in a worker's table rather than an `async fn`, a
//! tokio task or an actix actor: an idle connection is then exactly this
//! struct in a box (see BENCHMARKS.md for the bytes). It keeps the actor
//! properties: one owner of the state, one thing handled at a time (client
//! frames in order; requests from outside, such as a close, through its
//! outbox), a bounded queue toward the client, and a panic that ends this
//! connection alone with 1011.
//!
//! Each poll, in order: the connection's timers (heartbeat, heartbeat
//! timeout, authentication deadline); the message from outside waiting in
//! its outbox, handed to [`Actor::handle`]; the answer the
//! connection waits for, if any; flushing what the socket did not take;
//! then, unless waiting, reading. A connection has no timer of its own: it
//! asks its worker's loop to poll it when its next timer is due, and the
//! loop polls every connection due within the same tick in one wake-up, so
//! a worker's heartbeats leave in bursts and their pongs come back in
//! bursts. Reads go into a buffer shared by every connection of the worker;
//! only an incomplete frame is copied into the connection's own `input`. A closing connection writes its close, shuts its side, and reads
//! (discarding) until the client closes or [`CLOSE_GRACE`] passes, so the
//! client reads the close frame rather than a reset.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use super::core::Connection;
use super::reactor::{Driven, Reactor, Readiness};
use crate::delivery::Outbox;
use super::{clock, CLOSE_GRACE};
use crate::metrics::ActorKind;
use crate::supervisor::Actor;
use crate::protocol::close;
use crate::connection::Transport;

/// Bytes read from a socket at once, into the worker's shared buffer.
const READ_CHUNK: usize = 64 * 1024;

/// Reads per poll before the task lets the worker's other tasks run.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// The worker's read buffer, shared by all of its connections.
    pub(crate) static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A connection and its socket.
pub(crate) struct Task<T: Transport> {
    conn: Connection<T>,
    /// `None` for a connection its client reaches otherwise (a Socket.IO
    /// session that long-polls: see [`Transport::service`]).
    stream: Option<TcpStream>,
    /// An incomplete frame, or frames not handled yet because the
    /// connection waits for an answer. `None` while idle.
    // Boxed: 8 bytes per idle connection instead of 24.
    #[allow(clippy::box_collection)]
    input: Option<Box<Vec<u8>>>,
    /// Set once the connection is closing: when its socket is dropped
    /// anyway, on the [`clock`] (0: not closing).
    closing_until: u32,
    /// When the worker's loop was asked to poll the connection next, on the
    /// [`clock`] (0: not asked).
    armed: u32,
    /// Whether this side of the socket is shut (the close is written).
    shut: bool,
    finished: bool,
    /// Readiness the socket reported and no read or write has used up.
    readable: bool,
    writable: bool,
    /// The peer hung up: read to the end of the stream.
    hangup: bool,
}

impl<T: Transport> Task<T> {
    /// Drives `conn` over `stream`; `early` is what the client sent before
    /// the connection opened (frames right behind its request), and
    /// `readable` whether the socket may have more.
    pub(crate) fn new(conn: Connection<T>, stream: TcpStream, early: &[u8], readable: bool) -> Self {
        let mut task = Self {
            conn,
            stream: Some(stream),
            input: (!early.is_empty()).then(|| Box::new(early.to_vec())),
            closing_until: 0,
            armed: 0,
            shut: false,
            finished: false,
            readable,
            writable: true,
            hangup: false,
        };
        task.handle_input();
        task
    }

    /// Drives `conn`, which has no socket yet: its client reaches it
    /// through its transport (see [`Transport::service`]).
    pub(crate) fn detached(conn: Connection<T>) -> Self {
        Self {
            conn,
            stream: None,
            input: None,
            closing_until: 0,
            armed: 0,
            shut: false,
            finished: false,
            readable: false,
            writable: false,
            hangup: false,
        }
    }

    /// Moves the connection onto `stream` (registered with this worker's
    /// loop), `early` being what its client already sent on it.
    fn adopt(&mut self, stream: TcpStream, early: Vec<u8>) {
        if let Err(error) = super::reactor::Reactor::watch(stream.as_raw_fd()) {
            tracing::warn!(%error, "could not watch a connection's new socket");
            // The transport forgets it was offered one.
            T::socket_lost(&mut self.conn);
            return;
        }
        self.stream = Some(stream);
        self.readable = true;
        self.writable = true;
        self.hangup = false;
        if !early.is_empty() {
            self.input.get_or_insert_default().extend_from_slice(&early);
        }
        self.handle_input();
    }

    /// Drops a socket the connection goes on without.
    fn drop_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            super::reactor::Reactor::forget(stream.as_raw_fd());
        }
        self.input = None;
        self.readable = false;
        self.writable = false;
        self.hangup = false;
    }

    fn finish(&mut self) -> Poll<()> {
        if !self.finished {
            self.finished = true;
            self.conn.finish();
        }
        Poll::Ready(())
    }

    /// Runs the timers that are due, advances the connection, and asks to
    /// be polled again when its next timer is due.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = clock::now();
        if self.armed != 0 && clock::reached(now, self.armed) {
            self.armed = 0;
        }
        if self.closing_until == 0 {
            self.conn.run_timers(now);
        }
        let poll = self.advance(cx);
        if poll.is_pending() {
            let next = match self.closing_until {
                0 => self.conn.next_timer(),
                until => Some(until),
            };
            if let Some(at) = next {
                self.arm(now, at);
            }
        }
        poll
    }

    /// Has the worker's loop poll the connection at `at`, unless it will sooner.
    fn arm(&mut self, now: u32, at: u32) {
        if self.armed != 0 && clock::reached(at, self.armed) {
            return;
        }
        self.armed = at.max(1);
        Reactor::poll_again_after(std::time::Duration::from_millis(clock::since(at, now)));
    }

    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut reads = 0;
        loop {
            if let Some(msg) = self.conn.outbox().take_msg() {
                // A failure takes the same way as a panic: see `drive`.
                if let Err(failure) = self.conn.handle(msg) {
                    panic!("{failure}");
                }
            }
            if let Some((stream, early)) = T::service(&mut self.conn) {
                self.adopt(stream, early);
            }
            if let Some(pending) = self.conn.pending.as_mut() {
                if let Poll::Ready(then) = pending.as_mut().poll(cx) {
                    self.conn.pending = None;
                    then(&mut self.conn);
                    self.handle_input();
                    continue;
                }
            }
            if self.conn.is_closing() && self.closing_until == 0 {
                self.closing_until = clock::deadline(clock::now(), CLOSE_GRACE.as_millis() as u64);
                self.input = None;
            }
            if self.writable && self.conn.outbox().has_queued() {
                match self.conn.outbox().flush() {
                    Ok(()) => {}
                    // The socket's next writable edge brings the loop back.
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => self.writable = false,
                    Err(_) => return self.lost(),
                }
            }
            if self.closing_until != 0 {
                if clock::reached(clock::now(), self.closing_until) {
                    return self.finish();
                }
                let Some(stream) = &self.stream else {
                    // No socket: done once a poll has taken the last packets.
                    if !self.conn.outbox().has_polled() {
                        return self.finish();
                    }
                    return Poll::Pending;
                };
                if !self.shut && !self.conn.outbox().has_queued() {
                    self.shut = true;
                    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
                }
            } else if self.conn.pending.is_some() {
                return Poll::Pending;
            }
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.readable {
                return Poll::Pending;
            }
            reads += 1;
            match self.read() {
                Read::Data | Read::WouldBlock => {}
                Read::End if self.closing_until != 0 => return self.finish(),
                Read::End if T::socket_lost(&mut self.conn) => self.drop_stream(),
                Read::End => return self.lost(),
            }
        }
    }

    /// Ends a connection whose socket went away under it.
    fn lost(&mut self) -> Poll<()> {
        self.conn.lost();
        self.finish()
    }

    /// Reads what the socket has and hands it to the transport.
    fn read(&mut self) -> Read {
        let Some(stream) = self.stream.as_ref().map(|s| s.as_raw_fd()) else {
            self.readable = false;
            return Read::WouldBlock;
        };
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            // SAFETY: the descriptor is this task's open socket, and `scratch` is valid for writes.
            let read = unsafe { libc::read(stream, scratch.as_mut_ptr().cast(), scratch.len()) };
            let read = if read < 0 { Err(std::io::Error::last_os_error()) } else { Ok(read as usize) };
            let n = match read {
                Ok(0) => return Read::End,
                // A short read emptied the socket: the next bytes bring a new
                // edge, so no read is spent to hear "would block". Unless the
                // peer hung up, when the end of the stream must still be read.
                Ok(n) if n < scratch.len() && !self.hangup => {
                    self.readable = false;
                    n
                }
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Read::WouldBlock;
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => return Read::WouldBlock,
                Err(_) => return Read::End,
            };
            if self.closing_until != 0 {
                // Closing: what the client still sends is not read.
                return Read::Data;
            }
            self.conn.heard(clock::now());
            match self.input.as_mut() {
                None => {
                    let used = T::on_input(&mut self.conn, &mut scratch[..n]);
                    if used < n && !self.conn.is_closing() {
                        self.input = Some(Box::new(scratch[used..n].to_vec()));
                    }
                }
                Some(input) => {
                    input.extend_from_slice(&scratch[..n]);
                    self.handle_input();
                }
            }
            Read::Data
        })
    }

    /// Hands what is kept in `input` to the transport again.
    fn handle_input(&mut self) {
        if self.conn.pending.is_some() || self.conn.is_closing() {
            return;
        }
        let Some(mut input) = self.input.take() else { return };
        let used = T::on_input(&mut self.conn, &mut input);
        if self.conn.is_closing() || used == input.len() {
            return;
        }
        input.drain(..used);
        self.input = Some(input);
    }
}

/// What a read found.
enum Read {
    Data,
    WouldBlock,
    /// The client closed its side, or the socket failed.
    End,
}

impl<T: Transport> Driven for Task<T> {
    fn ready(&mut self, readiness: Readiness) {
        self.readable |= readiness.readable;
        self.writable |= readiness.writable;
        self.hangup |= readiness.hangup;
    }

    fn outbox(&self) -> Option<&Outbox> {
        Some(self.conn.outbox())
    }

    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        if this.finished {
            return Poll::Ready(());
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.step(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                this.conn.services().metrics.actor_failed(ActorKind::Connection);
                tracing::error!(conn = %this.conn.session().id, panic = %what, "connection failed; closing it with 1011");
                this.conn.pending = None;
                this.input = None;
                // Unless it was already closing when it failed: one close is enough.
                this.conn.close(close::INTERNAL, close::INTERNAL_REASON);
                match std::panic::catch_unwind(AssertUnwindSafe(|| this.step(cx))) {
                    Ok(poll) => poll,
                    Err(_) => this.finish(),
                }
            }
        }
    }
}

impl<T: Transport> Drop for Task<T> {
    /// A task dropped unfinished (its worker stopping) still leaves its
    /// rooms and presence, and releases its socket before closing it.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
