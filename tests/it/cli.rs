//! The real `herald` binary (command line, config file, environment
//! overrides) and the HTTP endpoints `/healthz`, `/readyz` and `/metrics`.

use crate::support::*;

use std::process::Output;
use std::time::Duration;

use serde_json::json;

/// Asserts that herald refused to start and that stderr names `needle`.
fn assert_fails_naming(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "herald should have failed; stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr should name `{needle}`: {stderr}");
}

/// Starts the binary with a file setting `port = 0` and `node_id = "filenode"`,
/// overridden by `HERALD_SERVER__NODE_ID=node_id` and a free `HERALD_SERVER__PORT`,
/// and returns the `node` of the first `welcome`.
async fn welcome_node_with_env_node_id(node_id: &str) -> String {
    let herald = HeraldCommand::new()
        .config("[server]\nport = 0\nnode_id = \"filenode\"\n")
        .env("HERALD_SERVER__NODE_ID", node_id)
        .start()
        .await;
    let (client, welcome) = ws_connect(&herald).await;
    client.close().await;
    welcome["node"].as_str().unwrap_or_else(|| panic!("node is a string: {welcome}")).to_owned()
}

// ---- the command line ----------------------------------------------------

#[test]
fn help_mentions_config_and_environment_overrides() {
    let output = HeraldCommand::new().arg("--help").run_to_exit();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("--config"), "{stdout}");
    assert!(stdout.contains("HERALD_"), "{stdout}");
}

#[test]
fn check_config_accepts_a_valid_file() {
    let output = HeraldCommand::new()
        .config("[server]\nport = 0\nnode_id = \"checked\"\n\n[auth]\nrequired = true\njwt_secret = \"s\"\n")
        .arg("--check-config")
        .run_to_exit();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn unknown_key_in_the_file_stops_start_up() {
    for (contents, key) in [("[server]\nport = 0\nprot = 1\n", "prot"), ("[sever]\nport = 0\n", "sever")] {
        assert_fails_naming(&HeraldCommand::new().config(contents).run_to_exit(), key);
    }
}

#[test]
fn wrong_typed_value_in_the_file_stops_start_up() {
    let output = HeraldCommand::new().config("[server]\nport = \"eighty\"\n").run_to_exit();
    assert_fails_naming(&output, "port");
}

#[test]
fn unknown_key_from_the_environment_stops_start_up() {
    let output = HeraldCommand::new().config("[server]\nport = 0\n").env("HERALD_SERVER__PROT", "1").run_to_exit();
    assert_fails_naming(&output, "prot");
}

#[test]
fn a_bad_namespace_stops_start_up_naming_its_key() {
    let cases = [
        ("[[namespaces]]\nprefix = \"live.\"\npresense = false\n", "presense"),
        ("[[namespaces]]\nprefix = \"live.\"\nslow_consumer = \"sometimes\"\n", "slow_consumer"),
        ("[[namespaces]]\nprefix = \"live.\"\njoin_events = \"no\"\n", "join_events"),
        ("[[namespaces]]\nprefix = \"live.\"\nhistory_size = -1\n", "history_size"),
        ("[[namespaces]]\npresence = false\n", "prefix"),
        ("[[namespaces]]\nprefix = \"\"\n", "prefix"),
        ("[[namespaces]]\nprefix = \"a.\"\n[[namespaces]]\nprefix = \"a.\"\n", "prefix"),
        ("namespaces = [\"live.\"]\n", "namespaces[0]"),
    ];
    for (contents, key) in cases {
        let output = HeraldCommand::new().config(&format!("{contents}\n[server]\nport = 0\n")).run_to_exit();
        assert_fails_naming(&output, key);
    }
    let output = HeraldCommand::new()
        .config("[server]\nport = 0\n")
        .env("HERALD_NAMESPACES__0__PREFIX", "live.")
        .env("HERALD_NAMESPACES__0__PRESENCE", "sometimes")
        .run_to_exit();
    assert_fails_naming(&output, "namespaces[0].presence");
}

#[tokio::test]
async fn namespaces_come_from_the_environment() {
    let herald = HeraldCommand::new()
        .config("[server]\nport = 0\n")
        .env("HERALD_NAMESPACES__0__PREFIX", "live.")
        .env("HERALD_NAMESPACES__0__PRESENCE", "false")
        .start()
        .await;
    let (mut client, _) = ws_connect(&herald).await;
    let joined = client.join("live.show").await;
    assert_eq!((joined["users"].clone(), joined["count"].clone()), (json!([]), json!(1)), "{joined}");
    let joined = client.join("lobby").await;
    assert_eq!(joined["users"].as_array().map(Vec::len), Some(1), "{joined}");
}

#[test]
fn missing_config_file_stops_start_up() {
    let path = std::env::temp_dir().join(format!("herald-cli-test-{}-missing.toml", std::process::id()));
    let path = path.to_str().unwrap();
    assert_fails_naming(&HeraldCommand::new().arg("--config").arg(path).run_to_exit(), path);
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    assert_eq!(welcome_node_with_env_node_id("envnode").await, "envnode");
}

#[tokio::test]
async fn numeric_node_id_from_the_environment_is_a_string() {
    assert_eq!(welcome_node_with_env_node_id("123").await, "123");
}

// ---- HTTP endpoints ------------------------------------------------------

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = start(config());
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_series() {
    let server = start(config());
    let metrics = Snapshot::take(&server).await;
    let text = &metrics.0;
    for series in [OPEN_WS, ACCEPTED_WS, OPEN_SSE, ACCEPTED_SSE, "herald_rooms_active"] {
        assert!(metrics.value(series).is_some(), "{series} missing:\n{text}");
    }
    assert!(text.contains("# TYPE herald_connections_accepted_total counter"), "{text}");
    assert!(text.contains("# TYPE herald_connections_open gauge"), "{text}");
    for family in ["herald_frames_received_total", "herald_frames_sent_total"] {
        let labelled = format!("{family}{{type=\"");
        assert!(text.lines().any(|l| l.starts_with(&labelled)), "{family} with a type label missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_documents_every_exported_metric_and_no_other() {
    let server = start(config());
    let families = Snapshot::take(&server).await.families();
    let exported: std::collections::BTreeSet<&str> = families.keys().map(String::as_str).collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let documented: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter(|l| l.starts_with("herald_"))
        .filter_map(|l| l.split(['{', '`']).next())
        .collect();
    assert!(exported.iter().all(|m| m.starts_with("herald_")), "every metric is herald_*: {exported:?}");
    let missing: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(missing.is_empty() && stale.is_empty(), "undocumented: {missing:?}; documented but not exported: {stale:?}");
}

/// The value of `series`, or 0 when a labelled child has not been created yet.
fn value(metrics: &Snapshot, series: &str) -> f64 {
    metrics.value(series).unwrap_or(0.0)
}

/// Whether `/metrics` shows `series` at exactly `expected`.
async fn metric_is(server: &TestServer, series: &str, expected: f64) -> bool {
    value(&Snapshot::take(server).await, series) == expected
}

#[tokio::test]
async fn metrics_count_a_scripted_session_exactly() {
    let server = start(config());
    let before = Snapshot::take(&server).await;
    assert_eq!(value(&before, "herald_rooms_active"), 0.0, "a fresh server has no rooms");

    let (mut a, _) = ws_connect(&server).await;
    let (b, _) = ws_connect(&server).await;
    a.join("metered").await;
    for n in 0..3 {
        a.send(json!({"type": "publish", "room": "metered", "data": n, "id": n})).await;
    }
    // Each publish gets its ack and, with the default echo, its message; in either order.
    let mut kinds = Vec::new();
    for _ in 0..6 {
        kinds.push(a.recv().await["type"].as_str().unwrap_or("?").to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["ack", "ack", "ack", "message", "message", "message"]);
    assert!(eventually(WAIT, || metric_is(&server, "herald_rooms_active", 1.0)).await, "one room while joined");
    assert!(eventually(WAIT, || metric_is(&server, OPEN_WS, 2.0)).await, "two open");

    let after = Snapshot::take(&server).await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    let after = &after.0;
    assert_eq!(delta(ACCEPTED_WS), 2.0, "{after}");
    assert_eq!(delta("herald_frames_received_total{type=\"publish\"}"), 3.0, "{after}");
    assert_eq!(delta("herald_frames_received_total{type=\"join\"}"), 1.0, "{after}");
    assert_eq!(delta("herald_frames_sent_total{type=\"welcome\"}"), 2.0, "{after}");
    assert_eq!(delta("herald_frames_sent_total{type=\"joined\"}"), 1.0, "{after}");
    assert_eq!(delta("herald_frames_sent_total{type=\"ack\"}"), 3.0, "{after}");
    assert_eq!(delta("herald_frames_sent_total{type=\"message\"}"), 3.0, "{after}");

    a.close().await;
    b.close().await;
    assert!(eventually(WAIT, || metric_is(&server, "herald_rooms_active", 0.0)).await, "no rooms after everyone left");
    assert!(eventually(WAIT, || metric_is(&server, OPEN_WS, 0.0)).await, "none open");
    let end = Snapshot::take(&server).await;
    assert_eq!(value(&end, ACCEPTED_WS) - value(&before, ACCEPTED_WS), 2.0);
}

// ---- logs ----------------------------------------------------------------

/// A running `herald` whose stderr lines are collected as they come.
struct Logging {
    herald: Herald,
}

impl Logging {
    /// Starts the binary with `log.format` and `log.level` from the environment
    /// (`RUST_LOG` unset, so `log.level` decides).
    async fn start(format: &str, level: &str) -> Self {
        let herald = HeraldCommand::new()
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("HERALD_LOG__FORMAT", format)
            .env("HERALD_LOG__LEVEL", level)
            .env("HERALD_LIMITS__RATE_PER_SEC", "100000")
            .env("HERALD_LIMITS__RATE_BURST", "100000")
            .start()
            .await;
        Self { herald }
    }

    fn lines(&self) -> Vec<String> {
        self.herald.stderr_lines()
    }

    /// A client session: connect, join, `frames` publishes and pings, close;
    /// returns the connection's id as the server logs it (`<node>-<n>` minus the node).
    async fn session(&self, frames: usize) -> String {
        let (mut client, welcome) = ws_connect(&self.herald).await;
        client.join("logs").await;
        for n in 0..frames {
            client.request(json!({"type": "publish", "room": "logs", "data": n, "id": n})).await;
            client.request(json!({"type": "ping", "id": n})).await;
        }
        client.close().await;
        let conn = welcome["conn"].as_str().expect("conn is a string");
        conn.rsplit('-').next().expect("conn has a number").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_give_one_line_per_connection_lifecycle_event_at_debug() {
    let herald = Logging::start("json", "debug").await;
    let conn = herald.session(25).await;
    let closed = eventually(WAIT, || async {
        herald.lines().iter().any(|l| l.contains("connection closed") && l.contains(&format!("\"conn\":\"{conn}\"")))
    })
    .await;
    // `herald listening` comes once every worker is ready, and the first
    // worker may serve a whole session before the last one is.
    eventually(WAIT, || async { herald.lines().iter().any(|l| l.contains("herald listening")) }).await;
    let lines = herald.lines();
    assert!(closed, "no `connection closed` line for {conn}: {lines:#?}");
    let events: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for event in &events {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "`{field}` missing from {event}");
        }
    }
    let of_conn: Vec<&serde_json::Value> = events.iter().filter(|e| e["conn"] == conn.as_str()).collect();
    let messages: Vec<&str> = of_conn.iter().filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(messages, ["connection opened", "connection authenticated", "connection closed"], "{of_conn:#?}");
    let closed = of_conn.last().unwrap();
    assert_eq!((closed["level"].as_str(), closed["code"].as_u64(), closed["transport"].as_str()), (Some("DEBUG"), Some(1000), Some("ws")));
    assert!(events.iter().any(|e| e["message"] == "herald listening" && e["level"] == "INFO"), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_logs_say_nothing_per_connection_or_message() {
    let herald = Logging::start("text", "info").await;
    assert!(eventually(WAIT, || async { herald.lines().iter().any(|l| l.contains("herald listening")) }).await);
    let before = herald.lines();
    assert!(before.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()), "text, not JSON: {before:#?}");
    herald.session(25).await;
    herald.session(25).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(herald.lines(), before, "two sessions of 100 frames wrote nothing at info");
}

#[test]
fn bad_log_settings_stop_start_up_naming_the_key() {
    assert_fails_naming(&HeraldCommand::new().env("HERALD_LOG__FORMAT", "xml").run_to_exit(), "log.format");
    let output = HeraldCommand::new().env("HERALD_LOG__LEVEL", "info,herald=loudly").run_to_exit();
    assert_fails_naming(&output, "log.level");
}
