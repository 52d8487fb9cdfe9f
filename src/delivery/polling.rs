//! How a long-polling Socket.IO session's HTTP requests reach it: its
//! [`Link`], shared by the requests (served by actix-web on any worker)
//! and the session's connection (on its own worker, without a socket).
//!
//! A poll takes what waits in the session's outbox, or waits for it (one
//! poll at a time); a post leaves its packets for the session to handle,
//! in order, on its own worker; a WebSocket opened to upgrade the session
//! is left for it to take. Whoever leaves something wakes the session
//! through its outbox.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Outbox;
use crate::protocol::socketio as packet;

/// How a polling session's requests reach its connection.
pub(crate) struct Link {
    pub sid: Arc<str>,
    outbox: Outbox,
    /// A request came since the session last looked.
    heard: AtomicBool,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The poll waiting for packets.
    waiter: Option<oneshot::Sender<Bytes>>,
    /// Packets posted and not handled yet, oldest first, and their bytes.
    inbox: VecDeque<String>,
    inbox_bytes: usize,
    /// A WebSocket to try, and what its client sent on it after its request.
    upgrade: Option<(std::net::TcpStream, Vec<u8>)>,
    /// A WebSocket answered `3probe`: polls are ended at once.
    probing: bool,
    /// The session moved onto a WebSocket, or ended: polls are refused.
    gone: bool,
}

/// What a poll gets.
pub(crate) enum Poll {
    /// The packets that waited.
    Ready(Bytes),
    /// Nothing yet: the packets come through this (the session's close
    /// packet if it ends first).
    Wait(oneshot::Receiver<Bytes>),
    /// Another poll is held (Engine.IO's clients never overlap theirs).
    Busy,
    /// The session upgraded or ended.
    Gone,
}

/// What a post did.
pub(crate) enum Posted {
    Taken,
    /// More packets (or bytes) would wait than the limits: a flood.
    Flood,
    Gone,
}

impl Link {
    pub(crate) fn new(sid: Arc<str>, outbox: Outbox) -> Self {
        Self { sid, outbox, heard: AtomicBool::new(true), state: Mutex::new(LinkState::default()) }
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether a request came since the last call.
    pub(crate) fn heard(&self) -> bool {
        self.heard.swap(false, Ordering::AcqRel)
    }

    /// A poll: what waits, or a wait for it. A poll that finds the session
    /// upgrading is ended with a noop rather than held.
    pub(crate) fn poll(&self) -> Poll {
        self.heard.store(true, Ordering::Release);
        let mut state = self.state.lock();
        if state.gone {
            return Poll::Gone;
        }
        if state.waiter.as_ref().is_some_and(|w| !w.is_closed()) {
            return Poll::Busy;
        }
        let polled = match self.outbox.take_polled() {
            Some(body) => Poll::Ready(body),
            None if state.probing => Poll::Ready(Bytes::from_static(packet::NOOP)),
            None => {
                let (tx, rx) = oneshot::channel();
                state.waiter = Some(tx);
                Poll::Wait(rx)
            }
        };
        drop(state);
        // The session looks at what came (and, once a poll took its last
        // packets, a closing session may end).
        self.outbox.wake();
        polled
    }

    /// A post's packets, for the session to handle; refused when more than
    /// `packets_limit` packets or `bytes_limit` bytes would wait.
    pub(crate) fn post(&self, packets: Vec<String>, packets_limit: usize, bytes_limit: usize) -> Posted {
        self.heard.store(true, Ordering::Release);
        let mut state = self.state.lock();
        if state.gone {
            return Posted::Gone;
        }
        let bytes: usize = packets.iter().map(String::len).sum();
        if state.inbox.len() + packets.len() > packets_limit || state.inbox_bytes + bytes > bytes_limit {
            return Posted::Flood;
        }
        state.inbox_bytes += bytes;
        state.inbox.extend(packets);
        drop(state);
        self.outbox.wake();
        Posted::Taken
    }

    /// The next packet posted.
    pub(crate) fn next_packet(&self) -> Option<String> {
        let mut state = self.state.lock();
        let packet = state.inbox.pop_front()?;
        state.inbox_bytes -= packet.len();
        Some(packet)
    }

    /// Hands what waits in the outbox to the waiting poll, if both are
    /// there; while the session is upgrading, a poll that would wait is
    /// ended with a noop instead. What a poll gone meanwhile could not take
    /// goes back in front of the queue.
    pub(crate) fn answer(&self) {
        let mut state = self.state.lock();
        let Some(waiter) = state.waiter.take() else { return };
        let body = match self.outbox.take_polled() {
            Some(body) => body,
            None if state.probing => Bytes::from_static(packet::NOOP),
            None => {
                state.waiter = Some(waiter);
                return;
            }
        };
        if let Err(body) = waiter.send(body) {
            if &body[..] != packet::NOOP {
                self.outbox.unpoll(body);
            }
        }
    }

    /// Leaves a WebSocket (already answered 101) for the session to try;
    /// `early` is what its client sent after its request. Dropped (the
    /// socket closed) when the session already has one, or is gone.
    pub(crate) fn offer_upgrade(&self, stream: std::net::TcpStream, early: Vec<u8>) {
        let mut state = self.state.lock();
        if state.gone || state.upgrade.is_some() {
            return;
        }
        state.upgrade = Some((stream, early));
        drop(state);
        self.outbox.wake();
    }

    pub(crate) fn take_upgrade(&self) -> Option<(std::net::TcpStream, Vec<u8>)> {
        self.state.lock().upgrade.take()
    }

    pub(crate) fn set_probing(&self, probing: bool) {
        self.state.lock().probing = probing;
    }

    /// The session moved onto the WebSocket `fd`: the poll under way ends
    /// with a noop, and later ones are refused.
    pub(crate) fn upgraded(&self, fd: RawFd) {
        let mut state = self.state.lock();
        state.gone = true;
        state.inbox.clear();
        state.inbox_bytes = 0;
        if let Some(waiter) = state.waiter.take() {
            let _ = waiter.send(Bytes::from_static(packet::NOOP));
        }
        self.outbox.upgrade(fd);
    }

    /// The session ended: the poll under way gets what is left (its close
    /// packet), and later ones are refused.
    pub(crate) fn end(&self) {
        let mut state = self.state.lock();
        state.gone = true;
        state.inbox.clear();
        state.inbox_bytes = 0;
        state.upgrade = None;
        if let Some(waiter) = state.waiter.take() {
            let body = self.outbox.take_polled().unwrap_or_else(|| Bytes::from_static(packet::CLOSE));
            let _ = waiter.send(body);
        }
    }
}
