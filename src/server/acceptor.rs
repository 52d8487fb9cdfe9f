//! Accepting, on every worker: each HTTP worker's loop has the listening
//! socket in its epoll set (`EPOLLEXCLUSIVE`, so a connection wakes one
//! worker, not all) and accepts what arrives itself. An accepted socket
//! starts its handshake on the worker that took it: no accept thread, no
//! hand-off between threads, no wake-up of another thread per connection.
//!
//! Accepted sockets are non-blocking from `accept4`, and inherit
//! `TCP_NODELAY` and `TCP_USER_TIMEOUT` from the listening socket, where
//! they are set once (see `super::bind`): accepting costs one system call.
//!
//! When accepting fails (most often EMFILE: the process is at its file
//! limit) the worker counts every failure, logs the first of a burst and
//! the recovery, and tries again at its next timer tick or as soon as
//! another connection arrives: the connections already open keep being
//! served, and accepting resumes as soon as descriptors free up.

use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::connection::reactor::{Driven, Reactor, Readiness};
use crate::delivery::Outbox;
use crate::node::Node;
use crate::transport::handshake::Handshaking;

/// How long after a failed `accept` to try again, at the least.
const RETRY: Duration = Duration::from_millis(50);

/// Connections accepted in one go before the worker's other work runs.
const BATCH: usize = 128;

/// The listening socket, as one worker's loop drives it.
pub(super) struct Listening {
    fd: RawFd,
    node: Arc<Node>,
    /// Failures in the current burst (0 when accepting normally).
    failures: u64,
}

impl Listening {
    /// Has this worker accept connections from the listening socket `fd`,
    /// which outlives the worker.
    pub(super) fn start(fd: RawFd, node: &Arc<Node>) -> std::io::Result<()> {
        Reactor::listen(fd, Box::new(Self { fd, node: node.clone(), failures: 0 })).map(|_| ())
    }
}

impl Driven for Listening {
    fn ready(&mut self, _: Readiness) {}

    fn outbox(&self) -> Option<&Outbox> {
        None
    }

    fn drive(&mut self, _: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BATCH {
            // SAFETY: `fd` is the listening socket, open for as long as the
            // workers run; null address pointers are allowed.
            let fd = unsafe {
                libc::accept4(self.fd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            };
            if fd >= 0 {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "accepting connections again");
                    self.failures = 0;
                }
                // SAFETY: `accept4` just returned this descriptor, owned by nothing else.
                let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
                Handshaking::start(stream, &self.node);
                continue;
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // Every pending connection is taken: the next brings a new edge.
                Some(libc::EAGAIN) => return Poll::Pending,
                Some(libc::EINTR | libc::ECONNABORTED) => continue,
                // The listening socket is gone: the server is stopping.
                Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK) => return Poll::Ready(()),
                _ => {
                    self.node.services.metrics.accept_errors.inc();
                    if self.failures == 0 {
                        tracing::warn!(%error, "cannot accept connections; open ones are still served, retrying");
                    }
                    self.failures += 1;
                    Reactor::poll_again_after(RETRY);
                    return Poll::Pending;
                }
            }
        }
        // More may be waiting: take them after the worker's other work.
        Reactor::poll_again_now();
        Poll::Pending
    }
}
