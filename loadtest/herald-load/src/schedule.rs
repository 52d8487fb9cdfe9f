//! When each publisher sends, and which of its messages are measured.
//!
//! Publisher `k` of `P` sends message `i` at `t0 + (k/P + i) / r`, where `r` is
//! the rate of one publisher: the publishers' sends interleave evenly instead
//! of bursting together. A message carries its scheduled time, not the time it
//! actually left, so a publisher held back by a slow server still charges the
//! delay to the latency (no coordinated omission).
//!
//! A step's timeline: warm-up messages from `t0`, then the measured window of
//! `window_us`, then a drain in which late messages may still arrive but no new
//! ones are scheduled.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One fan-out step as every worker sees it. Times are µs since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub t0_us: u64,
    pub warmup_us: u64,
    pub window_us: u64,
    pub drain_us: u64,
    /// Publishes per second of all publishers together.
    pub rate: f64,
    /// Publishers of the whole run (rooms × publishers per room).
    pub publishers: usize,
}

impl Step {
    /// First measured instant.
    pub fn window_start_us(&self) -> u64 {
        self.t0_us + self.warmup_us
    }

    /// First instant after the measured window; nothing is scheduled from here on.
    pub fn window_end_us(&self) -> u64 {
        self.window_start_us() + self.window_us
    }

    /// When the step's results are collected.
    pub fn end_us(&self) -> u64 {
        self.window_end_us() + self.drain_us
    }

    /// Whether a message scheduled at `t_us` is measured in this step.
    pub fn in_window(&self, t_us: u64) -> bool {
        (self.window_start_us()..self.window_end_us()).contains(&t_us)
    }

    /// The schedule of publisher `k`.
    pub fn publisher(&self, k: usize) -> Schedule {
        let interval_us = self.publishers as f64 * 1e6 / self.rate;
        Schedule { step: *self, offset: k as f64 / self.publishers as f64, interval_us }
    }
}

/// The send times of one publisher in one step.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    step: Step,
    /// `k/P`: this publisher's share of one interval.
    offset: f64,
    interval_us: f64,
}

impl Schedule {
    /// Scheduled time of message `i`.
    pub fn at_us(&self, i: u64) -> u64 {
        self.step.t0_us + ((self.offset + i as f64) * self.interval_us) as u64
    }

    /// The first message scheduled at or after `t_us`.
    fn first_from(&self, t_us: u64) -> u64 {
        let guess = ((t_us.saturating_sub(self.step.t0_us)) as f64 / self.interval_us - self.offset).max(0.0) as u64;
        // Float rounding can put the guess one off either way; settle it
        // against `at_us`, which is what the publisher itself uses.
        let mut i = guess.saturating_sub(1);
        while self.at_us(i) < t_us {
            i += 1;
        }
        i
    }

    /// All messages to send: warm-up and measured.
    pub fn sends(&self) -> Range<u64> {
        0..self.first_from(self.step.window_end_us())
    }

    /// The measured messages.
    pub fn measured(&self) -> Range<u64> {
        self.first_from(self.step.window_start_us())..self.first_from(self.step.window_end_us())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, publishers: usize) -> Step {
        Step { t0_us: 1_000_000, warmup_us: 2_000_000, window_us: 10_000_000, drain_us: 2_000_000, rate, publishers }
    }

    #[test]
    fn measured_messages_add_up_to_rate_times_window() {
        for (rate, publishers) in [(1000.0, 100), (200.0, 8), (7.0, 3), (1.0, 1), (333.3, 7)] {
            let step = step(rate, publishers);
            let measured: u64 = (0..publishers).map(|k| step.publisher(k).measured().count() as u64).sum();
            let want = rate * 10.0;
            assert!((measured as f64 - want).abs() <= publishers as f64, "{rate} {publishers}: {measured}");
        }
    }

    #[test]
    fn sends_are_spread_evenly_and_inside_their_window() {
        let step = step(1000.0, 4);
        let mut times: Vec<u64> = (0..4).flat_map(|k| {
            let s = step.publisher(k);
            s.sends().map(move |i| s.at_us(i))
        }).collect();
        times.sort_unstable();
        assert_eq!(times[0], step.t0_us);
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], 1000, "one send per millisecond across publishers");
        }
        assert!(*times.last().unwrap() < step.window_end_us());
        for k in 0..4 {
            let s = step.publisher(k);
            for i in s.measured() {
                assert!(step.in_window(s.at_us(i)));
            }
            let before = s.measured().start.checked_sub(1).map(|i| s.at_us(i));
            assert!(before.is_none_or(|t| t < step.window_start_us()));
        }
    }
}
