//! A real `redis-server`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Process, WAIT};

/// A real `redis-server` on a free port of its own, killed when dropped.
/// Persistence is off: every start is an empty Redis.
pub struct RedisServer {
    pub port: u16,
    process: Option<Process>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self { port: free_port(), process: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (on the same port) if stopped; returns once it accepts connections.
    pub fn restart(&mut self) {
        if self.process.is_some() {
            return;
        }
        let mut process = Process::spawn(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("redis-server runs (the README's test command installs it)");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = process.try_wait() {
                panic!("redis-server exited before listening on {}: {status}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
    }

    /// Kills it (SIGKILL): clients see the connection drop.
    pub fn stop(&mut self) {
        self.process = None;
    }
}
