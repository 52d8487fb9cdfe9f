//! Reaching a connection when its actor cannot be reached.
//!
//! A connection actor is polled only when its socket can take more bytes, so
//! a client that stops reading stalls the actor and fills its mailbox. Rooms
//! then see `Full`, and the [`Control`] block lets them act anyway: mark the
//! connection a slow consumer, queue one close frame past the bound, and, if
//! the connection has still not ended after a grace period, shut its socket
//! down from outside so the kernel releases everything it holds.
//!
//! The socket's descriptor is guarded by a lock that the connection clears
//! when it ends. The connection ends before its socket is closed (actix-http
//! drops the response body, which holds the actor, before the socket), so a
//! shutdown never lands on a descriptor number that was reused by another
//! connection.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::protocol::ServerKind;

/// The raw descriptor of an accepted socket, attached to its HTTP
/// connection's extensions by the server's workers.
#[derive(Debug, Clone, Copy)]
pub struct SocketFd(pub RawFd);

/// Per-connection state shared with everything that delivers to it.
#[derive(Debug)]
pub struct Control {
    socket: Mutex<Option<RawFd>>,
    slow: AtomicBool,
    oversized: AtomicBool,
    /// Frames queued to the connection and not yet taken by it: its
    /// outbound queue's depth, read when `/metrics` is scraped.
    queued: AtomicU32,
    /// The frame kinds the connection's transport writes, one bit per
    /// [`ServerKind`]: rooms skip the others without queueing them.
    carried: u16,
}

// One bit per frame kind in `Control::carried`.
const _: () = assert!(ServerKind::ALL.len() <= u16::BITS as usize);

impl Default for Control {
    /// No socket; every frame kind carried.
    fn default() -> Self {
        Self::new(None, |_| true)
    }
}

impl Control {
    pub fn new(socket: Option<RawFd>, carries: impl Fn(ServerKind) -> bool) -> Self {
        let carried = ServerKind::ALL.iter().filter(|&&kind| carries(kind)).fold(0, |bits, &kind| bits | 1 << kind as u16);
        Self {
            socket: Mutex::new(socket),
            slow: AtomicBool::new(false),
            oversized: AtomicBool::new(false),
            queued: AtomicU32::new(0),
            carried,
        }
    }

    /// Whether frames of `kind` are written to this connection's client.
    pub fn carries(&self, kind: ServerKind) -> bool {
        self.carried & 1 << kind as u16 != 0
    }

    /// Records a frame queued to the connection.
    pub fn queued_one(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a queued frame taken by the connection.
    pub fn took_one(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Frames waiting in the connection's outbound queue.
    pub fn queue_depth(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Marks the connection a slow consumer; true only the first time.
    pub fn mark_slow(&self) -> bool {
        !self.slow.swap(true, Ordering::AcqRel)
    }

    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }

    /// Records that the client announced a frame over the size limit.
    pub fn mark_oversized(&self) {
        self.oversized.store(true, Ordering::Release);
    }

    pub fn is_oversized(&self) -> bool {
        self.oversized.load(Ordering::Acquire)
    }

    /// Shuts the socket down in both directions, if the connection is still
    /// open. The stalled actor then sees its socket fail and stops.
    pub fn drop_socket(&self) {
        let socket = self.socket.lock();
        if let Some(fd) = *socket {
            // SAFETY: the descriptor belongs to this connection while `socket`
            // holds it, and the lock keeps `release` from running meanwhile.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether the peer has closed its side of the socket (or reset it), seen
    /// without reading: a peek that finds the end of the stream. For
    /// transports whose clients never send, where nothing else would notice
    /// until the next write.
    pub fn peer_gone(&self) -> bool {
        let socket = self.socket.lock();
        let Some(fd) = *socket else { return true };
        let mut byte = 0u8;
        // SAFETY: the descriptor belongs to this connection while `socket`
        // holds it (see `drop_socket`); recv writes at most one byte into `byte`.
        let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        match n {
            0 => true,
            1.. => false,
            _ => {
                let error = std::io::Error::last_os_error();
                !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
            }
        }
    }

    /// Called when the connection ends, before its socket is closed.
    pub fn release(&self) {
        *self.socket.lock() = None;
    }
}
