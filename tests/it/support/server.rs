//! A real server in this process, on port 0 and its own threads, stopped
//! when dropped; the config the tests start from, and tokens it accepts.

use std::net::SocketAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use herald::server::ShutdownHandle;
use herald::{Config, Server};
use serde_json::{json, Value};

use super::Endpoint;

pub const SECRET: &str = "test-secret";

/// How long a stopping server may take beyond its drain (`shutdown_timeout_ms`)
/// to stop its workers and return.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// A config for tests: port 0, short timers, a known JWT secret.
pub fn config() -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.server.node_id = "test".into();
    config.server.workers = 2;
    config.auth.jwt_secret = SECRET.into();
    // Functional tests send quickly; the rate limit has tests of its own.
    config.limits.rate_per_sec = 100_000;
    config.limits.rate_burst = 100_000;
    config
}

/// A config with `auth.required = true`.
pub fn config_auth_required() -> Config {
    let mut config = config();
    config.auth.required = true;
    config.auth.timeout_ms = 300;
    config
}

/// A server running in this process. Dropping it drains it as SIGTERM drains
/// the binary (connections still open get close 1001) and joins its thread.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    /// Says that [`Server::run`] returned.
    stopped: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// The server's `shutdown_timeout_ms`.
    drain: Duration,
}

impl Endpoint for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a real server with `config` on its own thread and actix system.
pub fn start(config: Config) -> TestServer {
    let drain = Duration::from_millis(config.server.shutdown_timeout_ms);
    let (started_tx, started) = mpsc::channel();
    let (stopped_tx, stopped) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("test-server".into())
        .spawn(move || {
            let server = Server::bind(config).expect("server binds");
            started_tx.send((server.local_addr(), server.shutdown_handle())).expect("test is waiting");
            let ran = server.run();
            let _ = stopped_tx.send(());
            ran.expect("server runs");
        })
        .expect("spawn the server's thread");
    let (addr, shutdown) = started.recv().expect("server started");
    TestServer { addr, shutdown, stopped, thread: Some(thread), drain }
}

/// Rate limits a test can trip: one client frame a second once a burst of
/// `burst` is spent, and the connection closed after `strikes` refused
/// frames in a row.
pub fn rate_limits(config: &mut Config, burst: u32, strikes: u32) {
    config.limits.rate_per_sec = 1;
    config.limits.rate_burst = burst;
    config.limits.rate_strikes = strikes;
}

/// Starts a server with the test config as `edit` leaves it.
pub fn server_with(edit: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = config();
    edit(&mut config);
    start(config)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        match self.stopped.recv_timeout(self.drain + STOP_MARGIN) {
            // Stopped, or its thread ended with a panic of its own (already reported).
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                eprintln!("the server on {} did not stop within {:?}; its thread is left behind", self.addr, self.drain + STOP_MARGIN)
            }
        }
    }
}

/// Mints an HS256 token for `sub` signed with [`SECRET`], valid for an hour, plus `extra` claims.
pub fn token(sub: &str, extra: Value) -> String {
    token_with(json!({"sub": sub}), extra, SECRET)
}

/// Mints a token from `claims` merged with `extra` (and an `exp` an hour ahead unless given).
pub fn token_with(claims: Value, extra: Value, secret: &str) -> String {
    let mut claims = claims;
    let exp = herald::protocol::now_ms() / 1000 + 3600;
    claims.as_object_mut().unwrap().entry("exp").or_insert(json!(exp));
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            claims[k] = v;
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
