//! `/metrics` read at one moment: how every test reads a Herald's metrics,
//! whether the server runs in this process or as a `herald` process.

use std::collections::BTreeMap;

use super::{fetch, http_get, Endpoint};

/// Series of the connection metrics, one per transport.
pub const OPEN_WS: &str = r#"herald_connections_open{transport="ws"}"#;
pub const OPEN_SSE: &str = r#"herald_connections_open{transport="sse"}"#;
pub const ACCEPTED_WS: &str = r#"herald_connections_accepted_total{transport="ws"}"#;
pub const ACCEPTED_SSE: &str = r#"herald_connections_accepted_total{transport="sse"}"#;

/// A `/metrics` exposition read at one moment.
pub struct Snapshot(pub String);

impl Snapshot {
    /// Scrapes `server`; panics unless it answers 200.
    pub async fn take(server: &impl Endpoint) -> Self {
        let (status, body) = http_get(server.addr(), "/metrics").await;
        assert_eq!(status, 200, "{body}");
        Snapshot(body)
    }

    /// Scrapes `server`, or `None` when it cannot be reached or answers
    /// anything but 200 within 2 s.
    pub async fn try_take(server: &impl Endpoint) -> Option<Self> {
        match fetch(server.addr(), "/metrics").await {
            Some((200, body)) => Some(Snapshot(body)),
            _ => None,
        }
    }

    /// The value of `series`, a name with its labels as exported
    /// (`name{label="value",...}`, or the name alone when unlabelled), or
    /// `None` when it is not exported.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The value of `series`; panics when it is not exported.
    pub fn get(&self, series: &str) -> f64 {
        self.value(series).unwrap_or_else(|| panic!("{series} is missing from /metrics:\n{}", self.0))
    }

    /// Every metric family, by its `# TYPE` line: name to type.
    pub fn families(&self) -> BTreeMap<String, String> {
        self.0
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
            .collect()
    }
}

/// Asserts how far each series moved between two snapshots.
#[track_caller]
pub fn assert_moved(before: &Snapshot, after: &Snapshot, expected: &[(&str, f64)]) {
    for (series, delta) in expected {
        assert_eq!(after.get(series) - before.get(series), *delta, "change of {series}");
    }
}
