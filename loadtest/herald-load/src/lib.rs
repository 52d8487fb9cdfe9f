//! # herald-load
//!
//! A load generator for Herald and for the peer servers it is compared with.
//! One coordinator process splits the connections over worker processes
//! (each at most `--per-process` connections, so no process nears its file
//! limit), starts their steps in lockstep, merges their figures, and reads
//! the server's memory and CPU from `/proc`.
//!
//! # Layout
//!
//! - [`cli`]: the fixed command line.
//! - [`coordinator`]: spawns workers, sequences a run, measures the server, builds the report.
//! - [`worker`]: a worker process: one task per connection on a current-thread runtime.
//! - [`ipc`]: the JSON-lines conversation between coordinator and workers.
//! - [`dialect`]: Herald and Socket.IO frames, built and classified.
//! - [`schedule`]: the publishers' send times (no coordinated omission).
//! - [`histogram`]: HDR latency histograms that merge exactly across processes.
//! - [`report`]: the report of each mode and whether it passes.
//! - [`recovery`]: `recover`'s check that each client saw each message once.
//! - [`server_stats`]: the server's RSS and CPU time from `/proc/<pid>`.
//! - [`token`]: JWTs for `--secret`.

pub mod cli;
pub mod coordinator;
pub mod dialect;
pub mod histogram;
pub mod ipc;
pub mod recovery;
pub mod report;
pub mod schedule;
pub mod server_stats;
pub mod token;
pub mod worker;

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: the clock every process of a run shares.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Raises the soft limit on open files to the hard limit: a worker holds one
/// descriptor per connection, far above the usual soft limit of 1024.
pub fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
