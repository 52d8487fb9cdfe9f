//! The server's resident memory and CPU time, read from `/proc/<pid>`.
//!
//! Reading `/proc` rather than asking the server keeps the figures
//! comparable across Herald and its peers, which expose nothing alike.

use std::fs;
use std::time::{Duration, Instant};

/// How long the server must stay under [`QUIET_SHARE`] of a core to count as quiet.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// Share of one core below which the server counts as quiet: what 20,000
/// idle connections' heartbeats cost is far below it.
const QUIET_SHARE: f64 = 0.05;

/// A process whose figures are read.
#[derive(Debug, Clone, Copy)]
pub struct ServerProcess {
    pid: u32,
}

impl ServerProcess {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// `VmRSS` in kB, or `None` when the process is gone.
    pub fn rss_kb(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_vm_rss(&status)
    }

    /// User plus system CPU time in seconds, or `None` when the process is gone.
    pub fn cpu_secs(&self) -> Option<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let ticks = parse_cpu_ticks(&stat)?;
        Some(ticks as f64 / clock_ticks_per_sec())
    }

    /// Waits until the server has used under [`QUIET_SHARE`] of a core for
    /// [`QUIET_FOR`], or until `limit` has passed. Returns the seconds waited
    /// and whether it went quiet; `None` when the process is gone.
    pub fn wait_quiet(&self, limit: Duration) -> Option<(f64, bool)> {
        let started = Instant::now();
        let mut before = self.cpu_secs()?;
        loop {
            std::thread::sleep(QUIET_FOR);
            let now = self.cpu_secs()?;
            let quiet = (now - before) / QUIET_FOR.as_secs_f64() < QUIET_SHARE;
            before = now;
            let waited = started.elapsed();
            if quiet || waited >= limit {
                return Some((waited.as_secs_f64(), quiet));
            }
        }
    }
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` (fields 14 and 15). The command name in field 2 may hold
/// spaces and parentheses, so fields are counted from its closing `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match ticks > 0 {
        true => ticks as f64,
        false => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_cpu_fields() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   12345 kB\n"), Some(12345));
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_its_own_process() {
        let me = ServerProcess::new(std::process::id());
        assert!(me.rss_kb().unwrap() > 0);
        assert!(me.cpu_secs().unwrap() >= 0.0);
        assert!(ServerProcess::new(u32::MAX).rss_kb().is_none());
    }

    #[test]
    fn an_idle_process_is_quiet_at_once_and_a_gone_one_is_none() {
        let me = ServerProcess::new(std::process::id());
        let (waited, quiet) = me.wait_quiet(Duration::from_secs(10)).unwrap();
        assert!(quiet);
        assert!(waited < 10.0, "{waited}");
        assert!(ServerProcess::new(u32::MAX).wait_quiet(Duration::from_secs(1)).is_none());
    }
}
