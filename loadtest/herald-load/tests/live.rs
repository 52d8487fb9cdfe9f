//! `herald-load` against a live Herald: each test starts a real server in this
//! process on a free port, runs the built binary with `--json` and small
//! sizes, and checks the report and the exit status.
//!
//! Latency thresholds are set far out of reach: these tests check that the
//! figures are complete and consistent, never how fast the machine is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::server::ShutdownHandle;
use herald::{Config, Server};
use serde_json::Value;

const SECRET: &str = "load-test-secret";
/// A p99 limit no healthy run misses, however loaded the machine.
const ANY_LATENCY: &str = "60000";

/// A config on a free port with the rate limit lifted.
fn config() -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.server.node_id = "load-test".into();
    config.server.workers = 2;
    config.server.shutdown_timeout_ms = 1_000;
    config.auth.jwt_secret = SECRET.into();
    config.limits.rate_per_sec = 1_000_000;
    config.limits.rate_burst = 1_000_000;
    config.limits.outbound_queue = 65_536;
    config
}

/// A real server on its own thread, stopped (and its thread joined) when
/// dropped.
struct Running {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start(config: Config) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let server = Server::bind(config).expect("server binds");
        tx.send((server.local_addr(), server.shutdown_handle())).expect("test is waiting");
        server.run().expect("server runs");
    });
    let (addr, shutdown) = rx.recv().expect("server started");
    Running { addr, shutdown, thread: Some(thread) }
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// What a run of the binary ended with.
struct Run {
    success: bool,
    report: Value,
    stderr: String,
}

/// Runs `herald-load` with `args` plus `--json`; the report is stdout's last line.
fn herald_load(args: &[&str]) -> Run {
    finished(spawn_load(args))
}

/// Starts `herald-load` with `args` plus `--json`, its output piped.
fn spawn_load(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald-load"))
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald-load runs")
}

/// Waits for a `herald-load` started by [`spawn_load`] and reads its report.
fn finished(child: Child) -> Run {
    let output = child.wait_with_output().expect("herald-load ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no report on stdout; stderr:\n{stderr}"));
    let report = serde_json::from_str(last).unwrap_or_else(|e| panic!("report is not JSON ({e}): {last}\n{stderr}"));
    Run { success: output.status.success(), report, stderr }
}

fn u(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or_else(|| panic!("{key} is not a count in {report}"))
}

#[test]
fn idle_connections_spread_over_workers_and_sources() {
    let server = start(config());
    let addr = server.addr;
    let pid = std::process::id().to_string();
    let url = ws_url(addr);
    let run = herald_load(&[
        "idle", "--connections", "300", "--hold-secs", "1", "--per-process", "100",
        "--sources", "127.0.0.2,127.0.0.3", "--url", &url, "--server-pid", &pid,
    ]);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(r["mode"], "idle");
    assert_eq!(u(r, "connections"), 300);
    assert_eq!(u(r, "connect_failures"), 0, "{r}");
    assert_eq!(u(r, "unexpected_frames"), 0, "{r}");
    assert_eq!(u(r, "closed_early"), 0, "{r}");
    assert!(run.stderr.contains("3 worker process"), "{}", run.stderr);
    for key in ["server_rss_before_kb", "server_rss_after_kb"] {
        assert!(u(r, key) > 0, "{key} in {r}");
    }
    for key in ["rss_per_connection_bytes", "server_cpu_secs_idle", "server_cpu_ms_per_sec_per_1k_conns", "connect_secs_total"] {
        assert!(r[key].is_number(), "{key} in {r}");
    }
    let ms = &r["connect_ms"];
    assert!(ms["p50"].as_f64().unwrap() <= ms["p99"].as_f64().unwrap(), "{r}");
    assert!(ms["p99"].as_f64().unwrap() <= ms["max"].as_f64().unwrap(), "{r}");
}

#[test]
fn idle_connections_answer_heartbeats() {
    let mut fast = config();
    fast.heartbeat.interval_ms = 200;
    fast.heartbeat.timeout_ms = 1000;
    let server = start(fast);
    let addr = server.addr;
    let url = ws_url(addr);
    // Several heartbeat timeouts long: a client that did not answer pings would be dropped.
    let run = herald_load(&["idle", "--connections", "50", "--hold-secs", "4", "--url", &url]);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(u(r, "closed_early"), 0, "{r}");
}

#[test]
fn fanout_delivers_every_message_to_every_member() {
    let server = start(config());
    let addr = server.addr;
    let url = ws_url(addr);
    let run = herald_load(&[
        "fanout", "--rooms", "4", "--members", "10", "--publishers", "2", "--rate", "200",
        "--duration-secs", "2", "--warmup-secs", "1", "--max-p99-ms", ANY_LATENCY, "--url", &url,
    ]);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(r["mode"], "fanout");
    let published = u(r, "published");
    // 200/s for 2 s, give or take one message per publisher at the window's edges.
    assert!((392..=408).contains(&published), "{r}");
    assert_eq!(u(r, "expected_deliveries"), published * 10);
    assert_eq!(u(r, "deliveries"), published * 10, "{r}");
    assert_eq!(r["loss"].as_f64(), Some(0.0));
    assert_eq!(u(r, "unsent"), 0);
    assert_eq!(r["held"], true);
    assert!(r["server_cpu_secs"].is_null(), "no --server-pid, no server figures: {r}");
    let l = &r["latency_ms"];
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"].iter().map(|k| l[k].as_f64().unwrap()).collect();
    assert!(p[0] > 0.0, "{r}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {r}"
    );
}

#[test]
fn publish_url_takes_the_publishers_and_only_them() {
    let server = start(config());
    let addr = server.addr;
    let url = ws_url(addr);
    let pid = std::process::id().to_string();
    let shape = [
        "fanout",
        "--rooms",
        "2",
        "--members",
        "5",
        "--publishers",
        "1",
        "--rate",
        "100",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0.5",
        "--max-p99-ms",
        ANY_LATENCY,
        "--url",
        url.as_str(),
    ];
    // The same server behind `--publish-url`: every member still gets every message.
    let run = herald_load(
        &[
            &shape[..],
            &[
                "--publish-url",
                &url,
                "--server-pid",
                &pid,
                "--publish-server-pid",
                &pid,
            ][..],
        ]
        .concat(),
    );
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("the 2 publishers among them connect to"),
        "{}",
        run.stderr
    );
    let published = u(r, "published");
    assert!(published > 0, "{r}");
    assert_eq!(u(r, "deliveries"), published * 5, "{r}");
    assert_eq!(r["loss"].as_f64(), Some(0.0));
    assert!(r["publish_server_cpu_secs"].is_number(), "{r}");

    // Nothing listens at `--publish-url`: exactly the publishers fail to open.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("ws://127.0.0.1:{port}/ws");
    let run = herald_load(
        &[
            &shape[..],
            &["--publish-url", &nowhere, "--connect-timeout-secs", "20"][..],
        ]
        .concat(),
    );
    let r = &run.report;
    assert!(!run.success, "{r}");
    assert_eq!(u(r, "connect_failures"), 2, "{r}");
    assert_eq!(u(r, "published"), 0, "{r}");
    assert!(
        r.get("publish_server_cpu_secs").is_none(),
        "no --publish-server-pid, no figure: {r}"
    );
}

#[test]
fn ramp_steps_up_until_the_limit() {
    let server = start(config());
    let addr = server.addr;
    let url = ws_url(addr);
    let run = herald_load(&[
        "ramp", "--rooms", "2", "--members", "5", "--publishers", "1", "--start-rate", "100",
        "--factor", "2", "--max-rate", "400", "--step-secs", "1", "--warmup-secs", "0.5",
        "--max-p99-ms", ANY_LATENCY, "--url", &url,
    ]);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(r["mode"], "ramp");
    let steps = r["steps"].as_array().expect("steps");
    assert!(!steps.is_empty());
    let rates: Vec<f64> = steps.iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(rates, vec![100.0, 200.0, 400.0], "{r}");
    assert!(r["max_held_rate"].as_f64().unwrap() >= 100.0, "{r}");
    assert_eq!(r["max_held"]["held"], true);
    for s in steps {
        assert_eq!(s["deliveries"], s["expected_deliveries"], "{s}");
    }
}

#[test]
fn rate_limit_errors_fail_the_run() {
    let mut limited = config();
    limited.limits.rate_per_sec = 1;
    limited.limits.rate_burst = 1;
    let server = start(limited);
    let addr = server.addr;
    let url = ws_url(addr);
    let run = herald_load(&[
        "fanout", "--rooms", "1", "--members", "3", "--publishers", "1", "--rate", "20",
        "--duration-secs", "1", "--warmup-secs", "0.5", "--max-p99-ms", ANY_LATENCY, "--url", &url,
    ]);
    let r = &run.report;
    assert!(!run.success, "{r}");
    assert!(u(r, "unexpected_frames") > 0, "{r}");
    let sample = r["unexpected_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("RATE_LIMITED"), "{r}");
    assert_eq!(r["held"], false);
}

#[test]
fn nothing_listening_counts_connect_failures() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let run = herald_load(&["idle", "--connections", "5", "--hold-secs", "0", "--url", &url, "--connect-timeout-secs", "20"]);
    let r = &run.report;
    assert!(!run.success, "{r}");
    assert_eq!(u(r, "connect_failures"), 5, "{r}");
    assert!(r["server_rss_before_kb"].is_null());
    assert!(run.stderr.contains("FAIL"), "{}", run.stderr);
}

#[test]
fn secret_authenticates_each_connection_as_its_own_user() {
    let mut auth = config();
    auth.auth.required = true;
    let server = start(auth);
    let addr = server.addr;
    let url = ws_url(addr);
    let run = herald_load(&["idle", "--connections", "20", "--hold-secs", "0", "--secret", SECRET, "--url", &url]);
    let r = &run.report;
    // The load client refuses a welcome that does not name `load-<index>`,
    // so no failures means every connection is that user.
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(u(r, "connect_failures"), 0, "{r}");
    assert_eq!(u(r, "authenticated"), 20, "{r}");

    let run = herald_load(&["idle", "--connections", "20", "--hold-secs", "0", "--secret", "wrong", "--url", &url]);
    let r = &run.report;
    assert!(!run.success, "{r}");
    assert_eq!(u(r, "connect_failures"), 20, "{r}");
    let sample = r["connect_failure_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("4002"), "{r}");
}

/// Herald's Socket.IO endpoint is reached from the server's base URL.
fn sio_url(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

#[test]
fn socketio_fanout_through_herald_delivers_every_message() {
    let server = start(config());
    let url = sio_url(server.addr);
    let run = herald_load(&[
        "fanout", "--dialect", "socketio", "--rooms", "3", "--members", "8", "--publishers", "1", "--rate", "150",
        "--duration-secs", "1", "--warmup-secs", "0.5", "--max-p99-ms", ANY_LATENCY, "--url", &url,
    ]);
    let r = &run.report;
    // Joins are acknowledged with `joined`, messages carry a trailing offset:
    // anything the client did not expect would be an unexpected frame.
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(u(r, "connect_failures"), 0, "{r}");
    assert_eq!(u(r, "unexpected_frames"), 0, "{r}");
    let published = u(r, "published");
    assert!(published > 0, "{r}");
    assert_eq!(u(r, "deliveries"), published * 8, "{r}");
    // Each member's join is announced to the members already in.
    assert!(u(r, "presence_frames") > 0, "{r}");
}

#[test]
fn socketio_idle_over_websocket_and_polling_answers_heartbeats() {
    let mut fast = config();
    fast.heartbeat.interval_ms = 200;
    fast.heartbeat.timeout_ms = 1000;
    let server = start(fast);
    let url = sio_url(server.addr);
    let pid = std::process::id().to_string();
    for transport in ["websocket", "polling"] {
        // Several heartbeat timeouts long: a client that did not answer pings would be dropped.
        let run = herald_load(&[
            "idle", "--dialect", "socketio", "--transport", transport, "--connections", "40", "--hold-secs", "3",
            "--per-process", "20", "--sources", "127.0.0.2,127.0.0.3", "--url", &url, "--server-pid", &pid,
        ]);
        let r = &run.report;
        assert!(run.success, "{transport}: {r}\n{}", run.stderr);
        assert_eq!(u(r, "connect_failures"), 0, "{transport}: {r}");
        assert_eq!(u(r, "closed_early"), 0, "{transport}: {r}");
        assert_eq!(u(r, "unexpected_frames"), 0, "{transport}: {r}");
        assert!(r["rss_per_connection_bytes"].is_number(), "{transport}: {r}");
    }
}

#[test]
fn socketio_secret_goes_in_the_connect_packet() {
    let mut auth = config();
    auth.auth.required = true;
    let server = start(auth);
    let url = sio_url(server.addr);
    for transport in ["websocket", "polling"] {
        let run = herald_load(&[
            "idle", "--dialect", "socketio", "--transport", transport, "--connections", "10", "--hold-secs", "0",
            "--secret", SECRET, "--url", &url,
        ]);
        let r = &run.report;
        assert!(run.success, "{transport}: {r}\n{}", run.stderr);
        assert_eq!(u(r, "authenticated"), 10, "{transport}: {r}");

        let run = herald_load(&[
            "idle", "--dialect", "socketio", "--transport", transport, "--connections", "10", "--hold-secs", "0",
            "--secret", "wrong", "--url", &url,
        ]);
        let r = &run.report;
        assert!(!run.success, "{transport}: {r}");
        assert_eq!(u(r, "connect_failures"), 10, "{transport}: {r}");
        let sample = r["connect_failure_samples"][0].as_str().unwrap_or_default();
        assert!(sample.contains("invalid token"), "{transport}: {r}");
    }
}

const API_KEY: &str = "load-api-key";

/// The members of `room` as the server's API counts them.
fn room_count(addr: SocketAddr, room: &str) -> u64 {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    write!(
        stream,
        "GET /api/rooms/{room}/presence HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer read");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    let presence: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    u(&presence, "count")
}

#[test]
fn room_prefix_names_the_rooms_and_presence_frames_are_counted() {
    let server = start(with_api());
    let url = ws_url(server.addr);
    let pid = std::process::id().to_string();
    let child = spawn_load(&[
        "fanout", "--rooms", "2", "--members", "6", "--publishers", "1", "--rate", "20",
        "--duration-secs", "2", "--warmup-secs", "1", "--max-p99-ms", ANY_LATENCY,
        "--room-prefix", "live.", "--url", &url, "--server-pid", &pid, "--settle-secs", "5",
    ]);
    // While it publishes, the members are in `live.load-<r>` and nobody is in `load-<r>`.
    let deadline = Instant::now() + Duration::from_secs(20);
    while room_count(server.addr, "live.load-0") < 6 || room_count(server.addr, "live.load-1") < 6 {
        assert!(Instant::now() < deadline, "the members never joined live.load-0 and live.load-1");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(room_count(server.addr, "load-0"), 0);
    let run = finished(child);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(u(r, "deliveries"), u(r, "published") * 6, "{r}");
    // Presence is on: member i of each room saw the i members after it arrive.
    assert_eq!(u(r, "presence_frames"), 2 * (5 + 4 + 3 + 2 + 1), "{r}");
    assert_eq!(u(r, "unexpected_frames"), 0, "{r}");
    assert!(u(r, "presence_frames_joining") <= u(r, "presence_frames"), "{r}");
    assert_eq!(u(r, "connections"), 12, "{r}");
    let joined = r["connect_secs_total"].as_f64().expect("time to join");
    let last = r["last_presence_secs"].as_f64().expect("presence frames arrived");
    assert!(last > 0.0 && joined > 0.0, "{r}");
    // The server shares this process with the other tests' servers, so it
    // may not go quiet: only that the wait was bounded and reported.
    assert!(r["settled"].is_boolean(), "{r}");
    assert!(r["settle_secs"].as_f64().unwrap() < 10.0, "{r}");
    for key in ["server_rss_before_kb", "server_rss_joined_kb"] {
        assert!(u(r, key) > 0, "{key} in {r}");
    }
    assert!(r["server_cpu_secs_joining"].is_number(), "{r}");
}

/// A config whose server API answers with [`API_KEY`].
fn with_api() -> Config {
    let mut config = config();
    config.api.key = API_KEY.into();
    config
}

/// `recover`'s short shape: 1 s of publishing before the drop and after the rejoins.
fn storm<'a>(url: &'a str, clients: &'a str, rooms: &'a str, rate: &'a str) -> Vec<&'a str> {
    vec![
        "recover", "--clients", clients, "--rooms", rooms, "--rate", rate, "--before-secs", "1",
        "--after-secs", "1", "--drain-secs", "1", "--recover-timeout-secs", "20", "--url", url,
    ]
}

#[test]
fn recover_storm_delivers_every_message_once() {
    let server = start(with_api());
    let url = ws_url(server.addr);
    let pid = std::process::id().to_string();
    let mut args = storm(&url, "200", "4", "200");
    args.extend([
        "--api-key", API_KEY, "--per-process", "100", "--sources", "127.0.0.2,127.0.0.3", "--server-pid", &pid,
    ]);
    let run = herald_load(&args);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert!(run.stderr.contains("2 worker process"), "{}", run.stderr);
    assert_eq!(r["mode"], "recover");
    assert_eq!(r["publish_via"], "api");
    assert_eq!(u(r, "connect_failures"), 0, "{r}");
    assert_eq!(u(r, "dropped"), 200, "{r}");
    assert_eq!(u(r, "recovered_true"), 200, "{r}");
    assert_eq!(u(r, "recovered_false"), 0, "{r}");
    assert_eq!(u(r, "not_rejoined"), 0, "{r}");
    assert_eq!(u(r, "checked"), 200, "{r}");
    // About 3 s of publishing at 200/s.
    assert!(u(r, "published") >= 300, "{r}");
    assert_eq!(u(r, "publish_failures"), 0, "{r}");
    assert_eq!(u(r, "final_seq_mismatches"), 0, "{r}");
    // Every client joined before the first publish: it must see every one of
    // its room's messages, once.
    assert_eq!(u(r, "expected_messages"), u(r, "published") * 50, "{r}");
    assert_eq!(u(r, "received_messages"), u(r, "expected_messages"), "{r}");
    for key in ["gaps", "duplicates", "out_of_order", "beyond_final", "before_base", "data_mismatches", "unchecked"] {
        assert_eq!(u(r, key), 0, "{key} in {r}");
    }
    assert!(r["all_recovered_secs"].as_f64().unwrap() > 0.0, "{r}");
    let ms = &r["recover_ms"];
    assert!(ms["p50"].as_f64().unwrap() <= ms["p99"].as_f64().unwrap(), "{r}");
    assert!(ms["p99"].as_f64().unwrap() <= ms["max"].as_f64().unwrap(), "{r}");
    assert!(r["server_cpu_secs_storm"].is_number(), "{r}");
    assert_eq!(r["passed"], true);
}

#[test]
fn recover_with_websocket_publishers_needs_no_api_key() {
    let server = start(with_api());
    let url = ws_url(server.addr);
    let mut args = storm(&url, "100", "2", "200");
    args.extend(["--publish-via", "ws", "--publish-connections", "2"]);
    let run = herald_load(&args);
    let r = &run.report;
    assert!(run.success, "{r}\n{}", run.stderr);
    assert_eq!(r["publish_via"], "ws");
    assert_eq!(u(r, "recovered_true"), 100, "{r}");
    assert!(u(r, "published") >= 300, "{r}");
    assert_eq!(u(r, "received_messages"), u(r, "published") * 50, "{r}");
    assert_eq!(u(r, "gaps") + u(r, "duplicates"), 0, "{r}");
}

#[test]
fn recover_without_history_reports_unrecovered_rejoins() {
    let mut off = with_api();
    off.history.size = 0;
    let server = start(off);
    let url = ws_url(server.addr);
    // One busy room: with no history, a client that missed anything while
    // away cannot be recovered, and at 2,000 publishes/s every client misses some.
    let mut args = storm(&url, "50", "1", "2000");
    args.extend(["--publish-via", "ws", "--publish-connections", "1", "--api-key", API_KEY]);
    let run = herald_load(&args);
    let r = &run.report;
    assert!(!run.success, "{r}");
    assert!(u(r, "recovered_false") > 0, "{r}");
    assert_eq!(u(r, "recovered_true") + u(r, "recovered_false"), 50, "{r}");
    // What an unrecovered rejoin did not replay is accounted for, not a gap.
    assert!(u(r, "missed_unrecovered") > 0, "{r}");
    assert_eq!(u(r, "gaps"), 0, "{r}");
    assert_eq!(u(r, "duplicates"), 0, "{r}");
    let why = r["failed_because"].to_string();
    assert!(why.contains("recovered false"), "{r}");
    assert!(r["all_recovered_secs"].is_null(), "{r}");
}

#[test]
fn recover_without_the_api_key_cannot_run() {
    let server = start(with_api());
    let url = ws_url(server.addr);
    let run = herald_load(&storm(&url, "10", "1", "10"));
    let r = &run.report;
    assert!(!run.success, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("401") && error.contains("--api-key"), "{r}");
}
