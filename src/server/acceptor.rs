//! The accept loop: takes connections off the listening socket, sets their
//! socket options, and hands them to the HTTP workers.
//!
//! When accepting fails (most often EMFILE: the process is at its file
//! limit) the loop counts every failure, logs the first of a burst and the
//! recovery, and retries shortly: the connections already open keep being
//! served, and accepting resumes as soon as descriptors free up.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::unix::AsyncFd;

use super::workers::Workers;
use crate::metrics::Metrics;

/// The least time between two returns of freed memory by the acceptor.
const SETTLE: Duration = Duration::from_secs(1);

/// How long to wait after a failed `accept` before trying again.
const RETRY: Duration = Duration::from_millis(50);

/// Accepts connections for the workers.
pub struct Acceptor {
    listener: AsyncFd<TcpListener>,
    /// Whether anything was accepted since the last burst ended.
    accepted: bool,
    settled: Instant,
    workers: Workers,
    /// `TCP_USER_TIMEOUT` for accepted sockets: how long unacknowledged data
    /// may wait before the kernel gives up on a vanished peer.
    user_timeout: Duration,
    /// Failures in the current burst (0 when accepting normally).
    failures: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener, workers: Workers, user_timeout: Duration) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        // SAFETY: the listener owns its descriptor for as long as the AsyncFd
        // holds it, and it is never swapped.
        let listener = unsafe { AsyncFd::register(listener) }.map_err(std::io::Error::from)?;
        Ok(Self { listener, accepted: false, settled: Instant::now(), workers, user_timeout, failures: 0 })
    }

    /// Accepts forever; stop it by dropping the future.
    pub async fn run(&mut self, metrics: &Metrics) {
        loop {
            match self.accept().await {
                Ok(stream) => {
                    if self.failures > 0 {
                        tracing::info!(failures = self.failures, "accepting connections again");
                        self.failures = 0;
                    }
                    let socket = SockRef::from(&stream);
                    let _ = socket.set_nonblocking(true);
                    let _ = socket.set_tcp_nodelay(true);
                    let _ = socket.set_tcp_user_timeout(Some(self.user_timeout));
                    self.workers.dispatch(stream);
                }
                Err(error) => {
                    metrics.accept_errors.inc();
                    if self.failures == 0 {
                        tracing::warn!(
                            %error,
                            "cannot accept connections; open ones are still served, retrying every {}ms",
                            RETRY.as_millis()
                        );
                    }
                    self.failures += 1;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// The next connection, straight from the kernel: no tokio registration
    /// for a socket that its worker registers anyway. Once a burst is over,
    /// this thread's freed memory goes back ([`crate::memory`]).
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        loop {
            let mut ready = self.listener.readable().await?;
            match ready.try_io(|listener| listener.get_ref().accept()) {
                Ok(result) => {
                    self.accepted = true;
                    return result.map(|(stream, _)| stream);
                }
                Err(_would_block) => {
                    if std::mem::take(&mut self.accepted) && self.settled.elapsed() >= SETTLE {
                        crate::memory::settle();
                        self.settled = Instant::now();
                    }
                }
            }
        }
    }

    /// Stops the workers and every connection they serve.
    pub fn stop(self) {
        drop(self.listener);
        self.workers.stop();
    }
}
