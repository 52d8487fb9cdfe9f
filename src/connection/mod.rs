//! What every transport's connection shares: the connection actor's core
//! ([`core`]) and its driver ([`task`]), the [`Transport`] trait each
//! transport implements, the [`services`] of its node it uses, and the
//! clock its timers run on. What rooms and presence deliver to a connection
//! goes through its outbox (`crate::delivery`).

pub(crate) mod core;
pub(crate) mod rate;
pub(crate) mod reactor;
pub(crate) mod services;
pub(crate) mod session;
pub(crate) mod socketio;
pub(crate) mod task;

use std::time::Duration;

use bytes::Bytes;

use crate::metrics::TransportKind;
use crate::protocol::ServerKind;
use core::Connection;


/// How long a closing connection gets to have its close frame taken (and
/// the client's close read) before its socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How closely connection timers are kept: a tenth of the shortest of the
/// heartbeat interval, the heartbeat timeout, the handshake timeout and
/// (while `auth.required`) the authentication timeout, between 5 ms and
/// 1 s. A worker runs every timer that falls due within one such tick in
/// one wake-up: with the defaults, 19,000 connections' heartbeats cost each
/// worker one wake-up a second, not 760.
pub(crate) fn timer_grid(config: &crate::config::Config) -> Duration {
    let mut shortest = config.heartbeat.interval_ms.min(config.heartbeat.timeout_ms);
    shortest = shortest.min(config.server.handshake_timeout_ms);
    if config.auth.required {
        shortest = shortest.min(config.auth.timeout_ms);
    }
    Duration::from_millis((shortest / 10).clamp(5, 1000))
}

/// The connections' clock: milliseconds since the process started, as a
/// `u32` that wraps every 49.7 days. Deadlines are compared with
/// [`clock::reached`], which is right across a wrap as long as they lie
/// within 24 days of now (heartbeats and timeouts do).
pub(crate) mod clock {
    /// Now, on this clock.
    pub(crate) fn now() -> u32 {
        (super::rate::now_us() / 1000) as u32
    }

    /// `now + ms`, on this clock.
    pub(crate) fn after(now: u32, ms: u64) -> u32 {
        now.wrapping_add(ms.min(i32::MAX as u64) as u32)
    }

    /// `now + ms` as a deadline kept in a field where 0 means "none": never 0.
    pub(crate) fn deadline(now: u32, ms: u64) -> u32 {
        after(now, ms).max(1)
    }

    /// Whether `deadline` has come at `now`.
    pub(crate) fn reached(now: u32, deadline: u32) -> bool {
        now.wrapping_sub(deadline) as i32 >= 0
    }

    /// The sooner of two times.
    pub(crate) fn earlier(a: u32, b: u32) -> u32 {
        if reached(a, b) {
            b
        } else {
            a
        }
    }

    /// Milliseconds from `earlier` to `now`; 0 when `earlier` is in fact
    /// later (another thread read the clock after `now` was taken).
    pub(crate) fn since(now: u32, earlier: u32) -> u64 {
        (now.wrapping_sub(earlier) as i32).max(0) as u64
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn deadlines_hold_across_a_wrap() {
            let now = u32::MAX - 10;
            let deadline = after(now, 100);
            assert!(deadline < now, "wrapped");
            assert!(!reached(now, deadline));
            assert!(reached(after(now, 100), deadline));
            assert!(reached(after(now, 5000), deadline));
            assert_eq!(since(after(now, 250), now), 250);
            assert_eq!(earlier(deadline, now), now);
            assert_eq!(earlier(now, deadline), now);
        }

        #[test]
        fn a_time_read_after_now_is_no_time_ago() {
            // A connection heard from on another thread just after `now`
            // was taken is not 49 days silent.
            for now in [5_000, u32::MAX - 3] {
                assert_eq!(since(now, after(now, 7)), 0);
            }
        }
    }
}

/// What one kind of socket does differently. Implemented by a connection's
/// transport-specific state, which the core keeps in `Connection::transport`.
pub(crate) trait Transport: Sized + Unpin + 'static {
    const KIND: TransportKind;

    /// Whether frames of `kind` are written to this transport's clients.
    /// Read once per connection into its outbox, which rooms consult before
    /// they queue anything.
    fn carries(kind: ServerKind) -> bool {
        let _ = kind;
        true
    }

    /// Whether the opening request's token (or its absence) decides who
    /// the connection is as it opens, with `welcome`. A transport that
    /// authenticates later (Socket.IO, with its CONNECT packet) says no:
    /// the connection then opens with `auth.timeout_ms` to sign in.
    const AUTH_AT_OPEN: bool = true;

    /// The last bytes of a connection closed with `code` and `reason`.
    fn close_bytes(&self, code: u16, reason: &str) -> Bytes;

    /// The heartbeat, as this transport writes it now.
    fn heartbeat(&self) -> Bytes {
        Self::KIND.ping()
    }

    /// Runs once the connection is open, after `welcome`: where a transport
    /// subscribes to what its request asked.
    fn opened(conn: &mut Connection<Self>) {
        let _ = conn;
    }

    /// Runs after a join of the client's was answered, and after a leave.
    fn rooms_changed(conn: &mut Connection<Self>) {
        let _ = conn;
    }

    /// Runs as the connection ends, before it leaves its rooms.
    fn ended(conn: &mut Connection<Self>) {
        let _ = conn;
    }

    /// Runs each time the connection is polled: for a transport whose
    /// client reaches it other than through its socket (a long-polling
    /// session). Returns a socket the connection moves onto, with what its
    /// client already sent on it.
    fn service(conn: &mut Connection<Self>) -> Option<(std::net::TcpStream, Vec<u8>)> {
        let _ = conn;
        None
    }

    /// The socket ended: whether the connection goes on without it (it was
    /// only being tried, as a polling session's upgrade is).
    fn socket_lost(conn: &mut Connection<Self>) -> bool {
        let _ = conn;
        false
    }

    /// Handles bytes from the client, as many whole frames as it can while
    /// the connection is neither closing nor waiting for an answer; returns
    /// how many bytes it used. The rest is given again with what follows.
    fn on_input(conn: &mut Connection<Self>, input: &mut [u8]) -> usize;
}
