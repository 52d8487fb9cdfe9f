//! Latency histograms in microseconds that travel between processes.
//!
//! Each worker records into its own HDR histogram and ships it to the
//! coordinator as `(value, count)` pairs of its non-empty buckets. Recording
//! those pairs into a histogram of the same precision puts every count back
//! in the bucket it came from, so merged percentiles are exact, not an
//! average of per-worker percentiles.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept: values are exact to 0.1 %.
const SIGFIG: u8 = 3;

/// A histogram of microsecond values.
#[derive(Debug, Clone)]
pub struct Micros(Histogram<u64>);

/// Percentiles in milliseconds, as reports show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The smaller percentile set of connect times and send lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BriefPercentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Default for Micros {
    fn default() -> Self {
        Self::new()
    }
}

impl Micros {
    pub fn new() -> Self {
        // Auto-resizing: a stalled server produces latencies of many seconds,
        // and those must be recorded, not clamped.
        let mut h = Histogram::new(SIGFIG).expect("3 significant figures is a valid precision");
        h.auto(true);
        Self(h)
    }

    /// Records one value; zero is kept as 1 µs so the bucket layout stays fixed.
    pub fn record(&mut self, micros: u64) {
        // Cannot fail: the histogram resizes to fit.
        let _ = self.0.record(micros.max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The non-empty buckets as `(value, count)`.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    /// Adds counts shipped by [`Micros::to_pairs`].
    pub fn add_pairs(&mut self, pairs: &[(u64, u64)]) {
        for &(value, count) in pairs {
            // Recording cannot fail on an auto-resizing histogram.
            let _ = self.0.record_n(value.max(1), count);
        }
    }

    pub fn add(&mut self, other: &Micros) {
        let _ = self.0.add(&other.0);
    }

    fn ms_at(&self, quantile: f64) -> f64 {
        match self.0.is_empty() {
            true => 0.0,
            false => round3(self.0.value_at_quantile(quantile) as f64 / 1000.0),
        }
    }

    fn max_ms(&self) -> f64 {
        match self.0.is_empty() {
            true => 0.0,
            false => round3(self.0.max() as f64 / 1000.0),
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.ms_at(0.5),
            p90: self.ms_at(0.9),
            p99: self.ms_at(0.99),
            p999: self.ms_at(0.999),
            max: self.max_ms(),
        }
    }

    pub fn brief_percentiles(&self) -> BriefPercentiles {
        BriefPercentiles { p50: self.ms_at(0.5), p99: self.ms_at(0.99), max: self.max_ms() }
    }
}

/// Rounds to three decimals, enough for microsecond resolution in milliseconds.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_shipped_pairs_gives_the_same_percentiles_as_one_histogram() {
        let mut whole = Micros::new();
        let mut a = Micros::new();
        let mut b = Micros::new();
        for v in 1..=20_000u64 {
            let value = v * 37 % 150_000 + 1;
            whole.record(value);
            match v % 3 {
                0 => a.record(value),
                _ => b.record(value),
            }
        }
        let mut merged = Micros::new();
        merged.add_pairs(&a.to_pairs());
        merged.add_pairs(&b.to_pairs());
        assert_eq!(merged.len(), whole.len());
        assert_eq!(merged.percentiles(), whole.percentiles());
    }

    #[test]
    fn percentiles_are_ordered_and_empty_is_zero() {
        assert_eq!(Micros::new().percentiles(), Percentiles::default());
        let mut h = Micros::new();
        for v in [100, 200, 300, 5_000, 90_000] {
            h.record(v);
        }
        let p = h.percentiles();
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.max - 90.0).abs() < 0.1, "{p:?}");
    }
}
