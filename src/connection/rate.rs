//! The per-connection rate limit: a token bucket of `rate_burst` frames
//! refilled at `rate_per_sec`, kept as GCRA's single "theoretical arrival
//! time".
//!
//! Why not governor: its direct limiter keeps an atomic, a quota and a clock
//! per instance and is built to be shared across threads. A connection is one
//! actor on one thread, and Herald exists for a million of them, so eight
//! bytes and no synchronisation serve better.

use std::sync::OnceLock;
use std::time::Instant;

/// The limit every connection of a node shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateRule {
    /// Time one frame "costs", in microseconds.
    cost_us: u64,
    /// How far ahead of now the bucket may run: `burst` frames' worth.
    allowance_us: u64,
}

impl RateRule {
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        let cost_us = 1_000_000 / u64::from(per_sec.max(1));
        Self { cost_us: cost_us.max(1), allowance_us: cost_us.max(1) * u64::from(burst.max(1)) }
    }
}

/// One connection's bucket.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RateLimiter {
    /// When the bucket will be full again, in microseconds since [`epoch`].
    tat_us: u64,
}

/// The process-wide instant that rate times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub(crate) fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

impl RateLimiter {
    /// Takes one frame's token at `now_us`; false when the bucket is empty.
    pub(crate) fn allow(&mut self, rule: RateRule, now_us: u64) -> bool {
        let tat = self.tat_us.max(now_us) + rule.cost_us;
        if tat - now_us > rule.allowance_us {
            return false;
        }
        self.tat_us = tat;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn micros(d: Duration) -> u64 {
        d.as_micros() as u64
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let rule = RateRule::new(10, 20);
        let mut bucket = RateLimiter::default();
        let start = 5_000_000;
        let allowed = (0..30).filter(|_| bucket.allow(rule, start)).count();
        assert_eq!(allowed, 20, "a full bucket holds the burst");
        // 100 ms later one more token has come back, and only one.
        let later = start + micros(Duration::from_millis(100));
        assert!(bucket.allow(rule, later));
        assert!(!bucket.allow(rule, later));
        // After two idle seconds the bucket is full again.
        let idle = later + micros(Duration::from_secs(2));
        assert_eq!((0..30).filter(|_| bucket.allow(rule, idle)).count(), 20);
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_limited() {
        let rule = RateRule::new(50, 1);
        let mut bucket = RateLimiter::default();
        for i in 0..1000 {
            assert!(bucket.allow(rule, 1_000_000 + i * 20_000), "frame {i}");
        }
    }
}
