//! What every transport's connection shares: the connection actor's core
//! ([`core`]) and its driver ([`task`]), its id, the [`Outbox`] that rooms
//! and presence deliver to, and the registry of open connections.
//!
//! Rooms and presence never wait on a connection: a delivery is one
//! non-blocking write, or a push onto a bounded queue. A frame that does not
//! fit means the client is not reading fast enough: the connection becomes a
//! slow consumer (close 4008, or a dropped socket when even that cannot get
//! through), and that is the connection's problem, never the room's.

pub mod core;
pub mod outbox;
pub mod rate;
pub mod reactor;
pub mod registry;
pub mod session;
pub mod task;

use std::fmt;
use std::time::Duration;

use crate::ids::UserId;
pub use outbox::{Bounds, Delivery, Outbox};

/// How long a closing connection gets to have its close frame taken (and
/// the client's close read) before its socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How closely connection timers are kept: a tenth of the shortest of the
/// heartbeat interval, the heartbeat timeout, the handshake timeout and
/// (while `auth.required`) the authentication timeout, between 5 ms and
/// 1 s. A worker runs every timer that falls due within one such tick in
/// one wake-up: with the defaults, 19,000 connections' heartbeats cost each
/// worker one wake-up a second, not 760.
pub fn timer_grid(config: &crate::config::Config) -> Duration {
    let mut shortest = config.heartbeat.interval_ms.min(config.heartbeat.timeout_ms);
    shortest = shortest.min(config.server.handshake_timeout_ms);
    if config.auth.required {
        shortest = shortest.min(config.auth.timeout_ms);
    }
    Duration::from_millis((shortest / 10).clamp(5, 1000))
}

/// A connection's id, unique on this node. Clients see it as `<node>-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A connection as a room or presence knows it.
#[derive(Clone)]
pub struct Member {
    pub conn: ConnId,
    pub user: UserId,
    pub outbox: Outbox,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member").field("conn", &self.conn).field("user", &self.user).finish()
    }
}

/// The connections' clock: milliseconds since the process started, as a
/// `u32` that wraps every 49.7 days. Deadlines are compared with
/// [`clock::reached`], which is right across a wrap as long as they lie
/// within 24 days of now (heartbeats and timeouts do).
pub mod clock {
    /// Now, on this clock.
    pub fn now() -> u32 {
        (super::rate::now_us() / 1000) as u32
    }

    /// `now + ms`, on this clock.
    pub fn after(now: u32, ms: u64) -> u32 {
        now.wrapping_add(ms.min(i32::MAX as u64) as u32)
    }

    /// `now + ms` as a deadline kept in a field where 0 means "none": never 0.
    pub fn deadline(now: u32, ms: u64) -> u32 {
        after(now, ms).max(1)
    }

    /// Whether `deadline` has come at `now`.
    pub fn reached(now: u32, deadline: u32) -> bool {
        now.wrapping_sub(deadline) as i32 >= 0
    }

    /// The sooner of two times.
    pub fn earlier(a: u32, b: u32) -> u32 {
        if reached(a, b) {
            b
        } else {
            a
        }
    }

    /// Milliseconds from `earlier` to `now`; 0 when `earlier` is in fact
    /// later (another thread read the clock after `now` was taken).
    pub fn since(now: u32, earlier: u32) -> u64 {
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

/// Outboxes without sockets, for tests and benches of code that delivers
/// to connections.
#[doc(hidden)]
pub mod testing {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::Outbox;
    use crate::protocol::ServerKind;
    use crate::transport::TransportKind;

    /// An outbox that keeps every frame as text (at most `capacity` at once).
    pub fn collector(capacity: usize) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        collector_with(capacity, |_| true)
    }

    /// [`collector`] for a transport that carries only the kinds `carries` accepts.
    pub fn collector_with(capacity: usize, carries: impl Fn(ServerKind) -> bool) -> (Outbox, Arc<Mutex<Vec<String>>>) {
        Outbox::recorder(TransportKind::WebSocket, carries, capacity)
    }
}
