//! The fixtures the integration tests share. Each stops what it starts when
//! it is dropped: an in-process server drains and its thread is joined, a
//! child process (`herald`, `redis-server`, Prometheus, k6) is killed and
//! reaped, a temporary file or directory is removed.
//!
//! - `server`: a real server in this process on port 0, the test config, tokens;
//! - `herald`: the `herald` binary as a child process;
//! - `child`: child processes, free ports, temporary files;
//! - `redis`, `prometheus`: real `redis-server` and Prometheus processes;
//! - `ws`, `sse`, `http`: real clients over real sockets;
//! - `metrics`: `/metrics` read at one moment.

mod child;
mod herald;
mod http;
mod metrics;
mod prometheus;
mod redis;
mod server;
mod sse;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use child::*;
pub use herald::*;
pub use http::*;
pub use metrics::*;
pub use prometheus::*;
pub use redis::*;
pub use server::*;
pub use sse::*;
pub use ws::*;

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// Where a Herald answers: a server in this process or a `herald` process.
pub trait Endpoint {
    fn addr(&self) -> SocketAddr;

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr())
    }
}

impl Endpoint for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

/// Polls `cond` until it is true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
