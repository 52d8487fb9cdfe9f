//! The reports: one JSON object per run, and the verdict that decides the
//! exit status.
//!
//! Failures are always in the report, never only in the exit status: connect
//! failures, unexpected frames and early closes are counted (with a few
//! samples) whether or not the run passed.

use serde::Serialize;

use crate::histogram::{BriefPercentiles, Percentiles};
use crate::ipc::{PresenceSeen, Trouble};
use crate::recovery::Tally;

/// How the connect phase went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectSummary {
    pub connections: u64,
    pub connect_failures: u64,
    pub connect_failure_samples: Vec<String>,
    /// Connections whose welcome named a user (a token was accepted).
    pub authenticated: u64,
    /// From spawning the workers until each connection had opened (in
    /// `fanout` and `ramp`: had its `joined`) or failed.
    pub connect_secs_total: f64,
    pub connect_ms: BriefPercentiles,
    /// When connecting started, µs since the epoch.
    #[serde(skip)]
    pub started_us: u64,
    /// Presence frames received while joining; `fanout` and `ramp` report them.
    #[serde(skip)]
    pub presence: PresenceSeen,
}

/// How `fanout`'s members got into their rooms (a ramp reports its connect
/// figures once, beside its steps).
#[derive(Debug, Clone, Serialize)]
pub struct JoinSummary {
    pub connections: u64,
    pub connect_failure_samples: Vec<String>,
    /// From spawning the workers until every member had its `joined` (or had failed).
    pub connect_secs_total: f64,
    /// Per member, TCP connect to `joined`.
    pub connect_ms: BriefPercentiles,
    /// Presence frames received before each worker's members had all joined.
    pub presence_frames_joining: u64,
    /// From the start of connecting until the last presence frame arrived,
    /// up to the end of the drain; `null` when none did.
    pub last_presence_secs: Option<f64>,
    /// With `--settle-secs`: how long the server took to go quiet after
    /// the joins, and whether it did within the limit.
    pub settle_secs: Option<f64>,
    pub settled: Option<bool>,
    pub server_rss_before_kb: Option<u64>,
    /// The server's VmRSS once every member had joined (and it had settled).
    pub server_rss_joined_kb: Option<u64>,
    /// Server CPU from the start of connecting until every member had
    /// joined (and the server had settled).
    pub server_cpu_secs_joining: Option<f64>,
}

/// `idle`.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    #[serde(flatten)]
    pub connect: ConnectSummary,
    pub hold_secs: u64,
    pub server_rss_before_kb: Option<u64>,
    pub server_rss_after_kb: Option<u64>,
    pub rss_per_connection_bytes: Option<f64>,
    pub server_cpu_secs_idle: Option<f64>,
    pub server_cpu_ms_per_sec_per_1k_conns: Option<f64>,
    #[serde(flatten)]
    pub trouble: Trouble,
}

/// One fan-out run, or one step of a ramp.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub mode: &'static str,
    pub rooms: usize,
    pub members: usize,
    pub publishers: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub payload_bytes: usize,
    /// Measured publishes actually sent.
    pub published: u64,
    /// Measured publishes the publishers had not sent when the step ended.
    pub unsent: u64,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub loss: f64,
    pub deliveries_per_sec: f64,
    pub latency_ms: Percentiles,
    /// How late publishers sent against their schedule; part of `latency_ms`
    /// (the client's timers tick in whole milliseconds).
    pub send_lag_ms: BriefPercentiles,
    pub server_cpu_secs: Option<f64>,
    pub deliveries_per_server_cpu_sec: Option<f64>,
    /// CPU of the server at `--publish-url`, over the same time as
    /// `server_cpu_secs`; only with `--publish-server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_server_cpu_secs: Option<f64>,
    /// `user_joined`/`user_left` frames the members received: in `fanout`,
    /// from the first join until the drain ended; in a ramp's step, since
    /// the previous report (the first step: since every member had joined).
    pub presence_frames: u64,
    /// When the last of `presence_frames` arrived, µs since the epoch.
    #[serde(skip)]
    pub presence_last_us: Option<u64>,
    /// `fanout` only.
    #[serde(flatten)]
    pub joining: Option<JoinSummary>,
    #[serde(flatten)]
    pub trouble: Trouble,
    pub connect_failures: u64,
    pub held: bool,
    /// Why `held` is false; empty when it is true.
    pub not_held_because: Vec<String>,
}

/// The limits a fan-out step must stay within to count as held.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub max_p99_ms: f64,
    pub max_loss: f64,
}

impl FanoutReport {
    /// Sets `held` and `not_held_because` from the figures.
    pub fn judge(&mut self, limits: Thresholds) {
        let mut why = Vec::new();
        if self.latency_ms.p99 > limits.max_p99_ms {
            why.push(format!("p99 latency {} ms over {} ms", self.latency_ms.p99, limits.max_p99_ms));
        }
        if self.loss > limits.max_loss {
            why.push(format!("loss {:.6} over {}", self.loss, limits.max_loss));
        }
        if self.deliveries > self.expected_deliveries {
            why.push(format!("{} deliveries, more than the {} expected", self.deliveries, self.expected_deliveries));
        }
        if self.unsent > 0 {
            why.push(format!("{} publishes not sent in time", self.unsent));
        }
        why.extend(failures(self.connect_failures, &self.trouble));
        self.held = why.is_empty();
        self.not_held_because = why;
    }
}

/// `ramp`.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    pub mode: &'static str,
    #[serde(flatten)]
    pub connect: ConnectSummary,
    /// Presence frames received while the members joined.
    pub presence_frames_joining: u64,
    pub steps: Vec<FanoutReport>,
    pub max_held_rate: Option<f64>,
    pub max_held: Option<FanoutReport>,
    /// Totals over the whole run.
    #[serde(flatten)]
    pub trouble: Trouble,
}

/// `recover`: a reconnect storm, and whether every client got every message once.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    pub mode: &'static str,
    /// `api` or `ws`: how the publishers published.
    pub publish_via: &'static str,
    pub rooms: usize,
    pub rate: f64,
    pub payload_bytes: usize,
    pub before_secs: f64,
    pub after_secs: f64,
    #[serde(flatten)]
    pub connect: ConnectSummary,
    /// Publishes acknowledged with a `seq` (`/api/publish`'s answer, or an `ack`).
    pub published: u64,
    pub publish_failures: u64,
    pub publish_failure_samples: Vec<String>,
    /// Acknowledged `seq`s that did not follow the room's previous one.
    pub publish_seq_jumps: u64,
    /// From a publish's scheduled time to its acknowledgement.
    pub publish_ack_ms: BriefPercentiles,
    /// Rooms whose final `seq` (from the history API) is not the last acknowledged one.
    pub final_seq_mismatches: u64,
    pub final_seq_samples: Vec<String>,
    /// Clients open at the drop.
    pub dropped: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    pub recovered_false_samples: Vec<String>,
    pub not_rejoined: u64,
    pub not_rejoined_samples: Vec<String>,
    /// Failed reconnect attempts (each tried again while the deadline allowed).
    pub reconnect_retries: u64,
    pub reconnect_retry_samples: Vec<String>,
    pub epoch_changed: u64,
    /// From the drop until the last client had `joined` with `recovered: true`;
    /// `null` unless every dropped client did.
    pub all_recovered_secs: Option<f64>,
    /// From the drop until the last `joined` of any kind.
    pub last_rejoin_secs: Option<f64>,
    /// Per client, from the drop to its `welcome` on the new connection.
    pub reconnect_ms: BriefPercentiles,
    /// Per client, from the drop to `joined` with `recovered: true`.
    pub recover_ms: BriefPercentiles,
    /// Per client, from the drop until it had every message up to its rejoin's `seq`.
    pub caught_up_ms: BriefPercentiles,
    /// Messages replayed after the rejoins (`seq` up to each rejoin's `joined.seq`).
    pub replayed: u64,
    #[serde(flatten)]
    pub check: Tally,
    /// Clients that opened but were left out of the check (ended early, never rejoined).
    pub unchecked: u64,
    pub check_samples: Vec<String>,
    /// Server CPU from the drop until every worker reported its clients back.
    pub server_cpu_secs_storm: Option<f64>,
    pub server_rss_before_kb: Option<u64>,
    pub server_rss_after_kb: Option<u64>,
    #[serde(flatten)]
    pub trouble: Trouble,
    pub passed: bool,
    pub failed_because: Vec<String>,
}

impl RecoverReport {
    /// Sets `passed` and `failed_because` from the figures.
    pub fn judge(&mut self) {
        let mut why = failures(self.connect.connect_failures, &self.trouble);
        let mut count = |n: u64, what: &str| {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        };
        count(self.not_rejoined, "clients not rejoined");
        count(self.recovered_false, "rejoins with recovered false");
        count(self.unchecked, "clients left out of the check");
        count(self.check.gaps, "messages missing (gaps)");
        count(self.check.duplicates, "messages received more than once");
        count(self.check.out_of_order, "messages out of order");
        count(self.check.beyond_final, "messages past the room's final seq");
        count(self.check.before_base, "messages before the first joined's seq");
        count(self.check.data_mismatches, "messages whose data does not match their seq");
        count(self.publish_failures, "publishes failed");
        count(self.publish_seq_jumps, "acknowledged seqs out of line");
        count(self.final_seq_mismatches, "rooms whose final seq differs from the last acknowledged");
        if self.published == 0 {
            why.push("nothing was published".into());
        }
        self.passed = why.is_empty();
        self.failed_because = why;
    }
}

/// The failures every mode shares.
fn failures(connect_failures: u64, trouble: &Trouble) -> Vec<String> {
    let mut why = Vec::new();
    if connect_failures > 0 {
        why.push(format!("{connect_failures} connections failed to open"));
    }
    if trouble.unexpected_frames > 0 {
        why.push(format!("{} unexpected frames", trouble.unexpected_frames));
    }
    if trouble.closed_early > 0 {
        why.push(format!("{} connections closed during the run", trouble.closed_early));
    }
    why
}

/// A finished run: its report and the reasons it failed (empty: exit 0).
pub trait Verdict: Serialize {
    fn failures(&self) -> Vec<String>;
}

impl Verdict for IdleReport {
    fn failures(&self) -> Vec<String> {
        failures(self.connect.connect_failures, &self.trouble)
    }
}

impl Verdict for FanoutReport {
    fn failures(&self) -> Vec<String> {
        self.not_held_because.clone()
    }
}

impl Verdict for RecoverReport {
    fn failures(&self) -> Vec<String> {
        self.failed_because.clone()
    }
}

impl Verdict for RampReport {
    /// A ramp ends with a step that is not held by design; it fails only when
    /// connections did not open or no step held at all.
    fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.connect.connect_failures > 0 {
            why.push(format!("{} connections failed to open", self.connect.connect_failures));
        }
        if self.max_held_rate.is_none() {
            let first = self.steps.first().map(|s| s.not_held_because.join("; ")).unwrap_or_default();
            why.push(format!("no step held (first step: {first})"));
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> FanoutReport {
        FanoutReport {
            mode: "fanout",
            rooms: 1,
            members: 10,
            publishers: 1,
            rate: 100.0,
            duration_secs: 1.0,
            payload_bytes: 100,
            published: 100,
            unsent: 0,
            expected_deliveries: 1000,
            deliveries: 1000,
            loss: 0.0,
            deliveries_per_sec: 1000.0,
            latency_ms: Percentiles { p50: 1.0, p90: 2.0, p99: 3.0, p999: 4.0, max: 5.0 },
            send_lag_ms: BriefPercentiles::default(),
            server_cpu_secs: None,
            deliveries_per_server_cpu_sec: None,
            publish_server_cpu_secs: None,
            presence_frames: 0,
            presence_last_us: None,
            joining: None,
            trouble: Trouble::default(),
            connect_failures: 0,
            held: false,
            not_held_because: Vec::new(),
        }
    }

    const LIMITS: Thresholds = Thresholds { max_p99_ms: 100.0, max_loss: 0.001 };

    #[test]
    fn a_clean_step_is_held() {
        let mut r = report();
        r.judge(LIMITS);
        assert!(r.held, "{:?}", r.not_held_because);
        assert!(r.failures().is_empty());
    }

    #[test]
    fn each_failure_breaks_the_hold_and_says_why() {
        let mut slow = report();
        slow.latency_ms.p99 = 150.0;
        let mut lossy = report();
        lossy.deliveries = 900;
        lossy.loss = 0.1;
        let mut noisy = report();
        noisy.trouble.unexpected("{\"type\":\"error\"}");
        let mut broken = report();
        broken.connect_failures = 1;
        for mut r in [slow, lossy, noisy, broken] {
            r.judge(LIMITS);
            assert!(!r.held);
            assert_eq!(r.failures().len(), 1, "{:?}", r.not_held_because);
        }
    }

    #[test]
    fn reports_serialise_with_the_documented_fields() {
        let mut r = report();
        r.judge(LIMITS);
        let v = serde_json::to_value(&r).unwrap();
        for key in ["mode", "published", "expected_deliveries", "loss", "latency_ms", "server_cpu_secs", "unexpected_frames", "closed_early", "connect_failures", "held"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert!(v["server_cpu_secs"].is_null());
        assert!(
            v.get("publish_server_cpu_secs").is_none(),
            "only with --publish-server-pid: {v}"
        );
        assert!(v["latency_ms"]["p999"].is_number());
        assert_eq!(v["presence_frames"], 0);
        assert!(v.get("connect_secs_total").is_none(), "a ramp's step has no join figures: {v}");
        r.joining = Some(JoinSummary {
            connections: 10,
            connect_failure_samples: Vec::new(),
            connect_secs_total: 1.5,
            connect_ms: BriefPercentiles::default(),
            presence_frames_joining: 45,
            last_presence_secs: Some(1.4),
            settle_secs: None,
            settled: None,
            server_rss_before_kb: None,
            server_rss_joined_kb: None,
            server_cpu_secs_joining: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["connect_secs_total"], 1.5);
        assert_eq!(v["presence_frames_joining"], 45);
        assert!(v["settled"].is_null());
        assert_eq!(v.as_object().unwrap().keys().filter(|k| *k == "connect_failures").count(), 1);
    }
}
