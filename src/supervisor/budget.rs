//! How many restarts a supervisor allows: at most `max_restarts` within any
//! sliding window of `window`. One more means the children keep failing for a
//! reason a restart does not cure, and the supervisor escalates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::SupervisionConfig;

/// The restarts one supervisor has made recently.
#[derive(Debug, Clone)]
pub(crate) struct RestartBudget {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(config: &SupervisionConfig) -> Self {
        Self { max: config.max_restarts, window: Duration::from_millis(config.window_ms), recent: VecDeque::new() }
    }

    /// Takes one restart at `now`; false when the window's allowance is spent.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self.recent.front().is_some_and(|&at| now.duration_since(at) >= self.window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u32, window_ms: u64) -> RestartBudget {
        RestartBudget::new(&SupervisionConfig { max_restarts: max, window_ms })
    }

    #[test]
    fn allows_max_restarts_within_the_window_then_refuses() {
        let mut b = budget(3, 1000);
        let t0 = Instant::now();
        assert!(b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(10)));
        assert!(b.allow(t0 + Duration::from_millis(20)));
        assert!(!b.allow(t0 + Duration::from_millis(30)));
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let mut b = budget(2, 1000);
        let t0 = Instant::now();
        assert!(b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(500)));
        assert!(!b.allow(t0 + Duration::from_millis(999)));
        // The first restart leaves the window: one more is allowed.
        assert!(b.allow(t0 + Duration::from_millis(1000)));
        assert!(!b.allow(t0 + Duration::from_millis(1400)));
        assert!(b.allow(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn zero_restarts_escalates_the_first_failure() {
        assert!(!budget(0, 1000).allow(Instant::now()));
    }

    #[test]
    fn a_refused_restart_is_not_counted() {
        let mut b = budget(1, 1000);
        let t0 = Instant::now();
        assert!(b.allow(t0));
        for ms in [100, 200, 300] {
            assert!(!b.allow(t0 + Duration::from_millis(ms)));
        }
        assert!(b.allow(t0 + Duration::from_millis(1000)));
    }
}
