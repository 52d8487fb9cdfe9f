//! The accept loop: takes connections off the listening socket, sets their
//! socket options, and hands them to the HTTP workers.
//!
//! When accepting fails (most often EMFILE: the process is at its file
//! limit) the loop counts every failure, logs the first of a burst and the
//! recovery, and retries shortly: the connections already open keep being
//! served, and accepting resumes as soon as descriptors free up.

use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpListener;

use super::workers::Workers;
use crate::metrics::Metrics;

/// How long to wait after a failed `accept` before trying again.
const RETRY: Duration = Duration::from_millis(50);

/// Accepts connections for the workers.
pub struct Acceptor {
    listener: TcpListener,
    workers: Workers,
    /// `TCP_USER_TIMEOUT` for accepted sockets: how long unacknowledged data
    /// may wait before the kernel gives up on a vanished peer.
    user_timeout: Duration,
    /// Failures in the current burst (0 when accepting normally).
    failures: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener, workers: Workers, user_timeout: Duration) -> Self {
        Self { listener, workers, user_timeout, failures: 0 }
    }

    /// Accepts forever; stop it by dropping the future.
    pub async fn run(&mut self, metrics: &Metrics) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if self.failures > 0 {
                        tracing::info!(failures = self.failures, "accepting connections again");
                        self.failures = 0;
                    }
                    let socket = SockRef::from(&stream);
                    let _ = socket.set_tcp_nodelay(true);
                    let _ = socket.set_tcp_user_timeout(Some(self.user_timeout));
                    match stream.into_std() {
                        Ok(stream) => self.workers.dispatch(stream),
                        Err(error) => tracing::warn!(%error, "could not hand over an accepted socket"),
                    }
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

    /// Stops the workers and every connection they serve.
    pub fn stop(self) {
        drop(self.listener);
        self.workers.stop();
    }
}
