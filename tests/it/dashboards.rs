//! The Grafana dashboard (`grafana/herald.json`) against a real Prometheus
//! scraping three live nodes: a single node with a tight rate limit and the
//! server API on, and a two-node cluster relaying through a real
//! `redis-server`. Clients connect, join, publish across nodes, get rate
//! limited and leave while Prometheus scrapes every second; then every panel
//! query runs through Prometheus's HTTP API with Grafana's variables filled in
//! and must answer with data. Every `herald_*` family a node exports must be
//! on the dashboard.

use crate::support::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const API_KEY: &str = "dashboards-test-key";
/// How long clients keep traffic flowing while Prometheus scrapes every second.
const TRAFFIC: Duration = Duration::from_secs(8);
/// Between two rounds of traffic.
const TICK: Duration = Duration::from_millis(250);
/// The rows of the dashboard, in order.
const ROWS: [&str; 7] = ["Overview", "Traffic", "Latency", "Drops and errors", "Cluster", "Process", "History and recovery"];
/// The data source every panel must use: the dashboard's `datasource` variable.
const DATASOURCE_UID: &str = "${datasource}";
/// The matcher every Herald series selector of a panel must carry.
const INSTANCE_MATCHER: &str = r#"instance=~"$instance""#;

/// One query of a panel.
struct Target {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every panel, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
}

/// The names of the Herald series an expression selects, each with the
/// label matchers written after it (empty without braces).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = expr[at..].find("herald_") {
        let start = at + offset;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        at = end;
        if start > 0 && ident(bytes[start - 1]) {
            continue;
        }
        let matchers = match expr[end..].strip_prefix('{') {
            Some(rest) => rest.split_once('}').map_or(rest, |(inside, _)| inside).to_owned(),
            None => String::new(),
        };
        found.push((expr[start..end].to_owned(), matchers));
    }
    found
}

/// Checks the dashboard's shape; returns its panel queries and its
/// `instance` variable's (metric, label) of `label_values(metric, label)`.
fn check_structure(dashboard: &Value, failures: &mut Vec<String>) -> (Vec<Target>, (String, String)) {
    let mut fail = |message: String| failures.push(message);
    if dashboard["uid"] != "herald" || dashboard["title"] != "Herald" {
        fail(format!("uid and title should be herald and Herald: {} {}", dashboard["uid"], dashboard["title"]));
    }
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned().unwrap_or(Value::Null);
    let datasource = variable("datasource");
    if datasource["type"] != "datasource" || datasource["query"] != "prometheus" {
        fail(format!("the datasource variable should pick Prometheus data sources: {datasource}"));
    }
    let instance = variable("instance");
    let wanted =
        [("type", json!("query")), ("multi", json!(true)), ("includeAll", json!(true)), ("allValue", json!(".*"))];
    for (key, value) in wanted {
        if instance[key] != value {
            fail(format!("the instance variable's {key} should be {value}: {instance}"));
        }
    }
    if instance["datasource"]["uid"] != DATASOURCE_UID {
        fail(format!("the instance variable should query {DATASOURCE_UID}: {instance}"));
    }
    let definition = instance["query"].as_str().or(instance["query"]["query"].as_str()).unwrap_or_default();
    let label_values = definition
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| args.split_once(','))
        .map(|(metric, label)| (metric.trim().to_owned(), label.trim().to_owned()));
    let label_values = label_values.unwrap_or_else(|| {
        fail(format!("the instance variable should be label_values(herald_build_info, instance): {definition:?}"));
        ("herald_build_info".into(), "instance".into())
    });

    let panels = all_panels(dashboard);
    let rows: Vec<&str> = panels.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    if rows != ROWS {
        fail(format!("the rows should be {ROWS:?}, are {rows:?}"));
    }
    let mut ids = BTreeSet::new();
    let mut targets = Vec::new();
    for panel in panels {
        if !ids.insert(panel["id"].to_string()) {
            fail(format!("panel id {} is used twice", panel["id"]));
        }
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        if title.is_empty() {
            fail(format!("a {} panel has no title", panel["type"]));
        }
        if panel["datasource"] != json!({"type": "prometheus", "uid": DATASOURCE_UID}) {
            fail(format!("{title}: datasource should be the {DATASOURCE_UID} variable, is {}", panel["datasource"]));
        }
        let queries = panel["targets"].as_array().cloned().unwrap_or_default();
        if queries.is_empty() {
            fail(format!("{title}: no queries"));
        }
        for query in queries {
            let ref_id = query["refId"].as_str().unwrap_or_default().to_owned();
            let expr = query["expr"].as_str().unwrap_or_default().trim().to_owned();
            if expr.is_empty() {
                fail(format!("{title} [{ref_id}]: empty expr"));
                continue;
            }
            if !query["datasource"].is_null() && query["datasource"]["uid"] != DATASOURCE_UID {
                fail(format!("{title} [{ref_id}]: datasource should be {DATASOURCE_UID}, is {}", query["datasource"]));
            }
            for (name, matchers) in selectors(&expr) {
                if !matchers.contains(INSTANCE_MATCHER) {
                    fail(format!("{title} [{ref_id}]: {name} lacks {INSTANCE_MATCHER}: {expr}"));
                }
            }
            targets.push(Target { panel: title.clone(), ref_id, expr });
        }
    }
    (targets, label_values)
}

/// `expr` with Grafana's variables as Grafana fills them in: a multi-value
/// `$instance` as an escaped regex alternation.
fn interpolate(expr: &str, instances: &[String]) -> String {
    let escaped: Vec<String> = instances.iter().map(|i| i.replace('.', r"\\.")).collect();
    let alternation = format!("({})", escaped.join("|"));
    let mut out = expr.to_owned();
    for name in ["instance", "__rate_interval", "__interval", "__range"] {
        out = out.replace(&format!("${{{name}}}"), &format!("${name}"));
    }
    out.replace("$__rate_interval", "5s")
        .replace("$__interval", "1s")
        .replace("$__range", "1m")
        .replace("$instance", &alternation)
}

/// Whether `family` (of `kind`) is among the names a dashboard queries.
fn referenced(family: &str, kind: &str, names: &BTreeSet<String>) -> bool {
    let series: &[&str] = match kind {
        "histogram" => &["", "_bucket", "_sum", "_count"],
        "summary" => &["", "_sum", "_count"],
        _ => &[""],
    };
    series.iter().any(|suffix| names.contains(&format!("{family}{suffix}")))
}

/// Reads whatever arrived, stopping at the first quiet moment or a close;
/// returns how many frames were refused with `RATE_LIMITED`.
async fn drain(client: &mut Client) -> usize {
    let mut limited = 0;
    while let Some(Event::Frame(frame)) = client.next_event_within(Duration::from_millis(2)).await {
        limited += usize::from(frame["type"] == "error" && frame["code"] == "RATE_LIMITED");
    }
    limited
}

/// A client that only reads, until its task is aborted.
fn reader(mut client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move { while let Some(Event::Frame(_)) = client.next_event_within(Duration::from_secs(60)).await {} },
    )
}

/// An event stream that only reads, until its task is aborted or it ends.
fn sse_reader(mut client: SseClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !matches!(client.next_within(Duration::from_secs(60)).await, Some(SseItem::End) | None) {}
    })
}

async fn ready(server: &TestServer) {
    let up = eventually(Duration::from_secs(10), || async { http_get(server.addr, "/readyz").await.0 == 200 }).await;
    assert!(up, "{} not ready", server.addr);
}

/// Publishes into `room` from `sender` until `receiver` gets one: the
/// nodes' subscriptions are live.
async fn until_relayed(sender: &mut Client, receiver: &mut Client, room: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "{room} never relayed across the cluster");
        sender.send(json!({"type": "publish", "room": room, "data": "probe"})).await;
        drain(sender).await;
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let frame = receiver.recv().await;
                if frame["type"] == "message" && frame["room"] == room {
                    return;
                }
            }
        });
        if got.await.is_ok() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_from_prometheus_scraping_live_nodes() {
    let began = Instant::now();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/herald.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut failures = Vec::new();
    let (targets, (variable_metric, variable_label)) = check_structure(&dashboard, &mut failures);

    // A single node with a tight rate limit and the API on.
    let mut solo = config();
    solo.server.node_id = "solo".into();
    solo.api.key = API_KEY.into();
    solo.limits.rate_per_sec = 1;
    solo.limits.rate_burst = 2;
    solo.limits.rate_strikes = 100;
    solo.limits.max_message_bytes = 1024;
    let solo = start(solo);
    // Two nodes relaying through Redis.
    let redis = RedisServer::start();
    let clustered = |id: &str| {
        let mut config = config();
        config.server.node_id = id.into();
        config.api.key = API_KEY.into();
        config.cluster.enabled = true;
        config.cluster.redis_url = redis.url();
        config.cluster.node_ttl_ms = 2000;
        start(config)
    };
    let (north, south) = (clustered("north"), clustered("south"));
    for server in [&solo, &north, &south] {
        ready(server).await;
    }
    let servers = began.elapsed();
    let instances: Vec<String> = [&solo, &north, &south].iter().map(|s| s.addr.to_string()).collect();

    let dir = TempDir::new("dashboards");
    let prometheus = Prometheus::start(dir.path(), &instances).await;
    prometheus.until_up(&instances).await;
    let scraping = began.elapsed();

    // Clients that stay for the whole test.
    let mut alice = ws_connect_as(&solo, "alice").await;
    let mut bob = ws_connect_as(&solo, "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let carol = sse_open(&solo, &format!("rooms=lobby&token={}", token("carol", json!({})))).await;
    assert_eq!(carol.status, 200, "carol's event stream");
    let mut dave = ws_connect_as(&north, "dave").await;
    let mut erin = ws_connect_as(&south, "erin").await;
    let mut frank = ws_connect_as(&south, "frank").await;
    for client in [&mut dave, &mut erin, &mut frank] {
        client.join("mesh").await;
    }
    until_relayed(&mut dave, &mut frank, "mesh").await;
    let grace = sse_open(&north, &format!("rooms=mesh&token={}", token("grace", json!({})))).await;
    assert_eq!(grace.status, 200, "grace's event stream");
    let readers = [reader(frank), sse_reader(carol), sse_reader(grace)];

    // Traffic while Prometheus scrapes.
    let publish = |room: &str, n: usize| json!({"room": room, "data": {"n": n}}).to_string();
    let until = Instant::now() + TRAFFIC;
    let mut tick = 0;
    let mut limited = 0;
    while Instant::now() < until {
        // Four a second against a rate of one: RATE_LIMITED errors flow.
        alice.send(json!({"type": "publish", "room": "lobby", "data": {"n": tick}, "id": tick})).await;
        if tick % 4 == 0 {
            let frame = match tick / 4 % 5 {
                0 => json!({"type": "ping"}),
                1 => json!({"type": "typing", "room": "lobby", "typing": true}),
                2 => json!({"type": "presence", "room": "lobby"}),
                3 => json!({"type": "status", "users": ["alice", "carol"]}),
                _ => json!({"type": "direct", "to": "alice", "data": "hi"}),
            };
            bob.send(frame).await;
        }
        dave.send(json!({"type": "publish", "room": "mesh", "data": {"n": tick}})).await;
        if tick % 2 == 0 {
            erin.send(json!({"type": "publish", "room": "mesh", "data": {"n": tick}})).await;
        }
        let (status, reply) = api(solo.addr, "POST", "/api/publish", Some(API_KEY), &publish("lobby", tick)).await;
        assert_eq!(status, 200, "{reply}");
        let (status, reply) = api(south.addr, "POST", "/api/publish", Some(API_KEY), &publish("mesh", tick)).await;
        assert_eq!(status, 200, "{reply}");
        match tick % 4 {
            0 => assert_eq!(api(solo.addr, "GET", "/api/nope", Some(API_KEY), "").await.0, 404),
            1 => assert_eq!(api(solo.addr, "POST", "/api/publish", Some("wrong"), &publish("lobby", 0)).await.0, 401),
            2 => assert_eq!(api(north.addr, "GET", "/api/rooms/mesh/presence", Some(API_KEY), "").await.0, 200),
            _ => assert_eq!(api(solo.addr, "POST", "/api/publish", Some(API_KEY), "{").await.0, 400),
        }
        // Connections come and go.
        if tick % 4 == 2 {
            let mut passer = ws_connect_as(&north, &format!("passer-{tick}")).await;
            passer.join("mesh").await;
            passer.send_text("not json").await;
            drain(&mut passer).await;
            passer.close().await;
        }
        if tick == 6 {
            let (mut big, _) = ws_connect(&solo).await;
            big.send_text(&format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2048))).await;
            assert_eq!(big.expect_close().await.0, 1009, "an oversized frame closes with 1009");
        }
        for client in [&mut alice, &mut bob, &mut dave, &mut erin] {
            limited += drain(client).await;
        }
        tick += 1;
        tokio::time::sleep(TICK).await;
    }
    assert!(limited > 0, "the single node rate limited nobody");

    // Every panel query, as Grafana would send it.
    let queried = Instant::now();
    for target in &targets {
        let promql = interpolate(&target.expr, &instances);
        let outcome = if promql.contains('$') {
            Err("a variable the test does not know is left".to_owned())
        } else {
            match prometheus.query(&promql).await {
                Ok(result) if result.is_empty() => Err("no data".to_owned()),
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            }
        };
        if let Err(error) = outcome {
            failures.push(format!(
                "{} [{}]: {}\n      as run: {promql}\n      -> {error}",
                target.panel, target.ref_id, target.expr
            ));
        }
    }
    // The instance variable lists every node.
    let path = format!("/api/v1/label/{variable_label}/values?{}={}", url_encode("match[]"), url_encode(&variable_metric));
    match prometheus.api(&path).await {
        Ok(values) => {
            let listed: BTreeSet<&str> = values.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let missing: Vec<&String> = instances.iter().filter(|i| !listed.contains(i.as_str())).collect();
            if !missing.is_empty() {
                let query = format!("label_values({variable_metric}, {variable_label})");
                failures.push(format!("variable instance: {query} lacks {missing:?} (has {listed:?})"));
            }
        }
        Err(error) => failures.push(format!("variable instance: {path} -> {error}")),
    }
    let queries_took = queried.elapsed();

    // Every family a node exports is on the dashboard.
    let mut exported = BTreeMap::new();
    for server in [&solo, &north, &south] {
        let families = Snapshot::take(server).await.families();
        exported.extend(families.into_iter().filter(|(name, _)| name.starts_with("herald_")));
    }
    let names: BTreeSet<String> = targets
        .iter()
        .map(|t| t.expr.as_str())
        .chain([variable_metric.as_str()])
        .flat_map(|expr| selectors(expr).into_iter().map(|(name, _)| name))
        .collect();
    for (family, kind) in &exported {
        if !referenced(family, kind, &names) {
            failures.push(format!("metric family {family} ({kind}) is exported but no panel queries it"));
        }
    }

    for task in readers {
        task.abort();
    }
    drop(prometheus);
    drop(dir);
    eprintln!(
        "dashboards: {} queries, {} families exported; nodes up after {servers:?}, \
         prometheus scraping after {scraping:?}, queries took {queries_took:?}, {:?} in all",
        targets.len(),
        exported.len(),
        began.elapsed()
    );
    assert!(failures.is_empty(), "{} dashboard problem(s):\n  {}", failures.len(), failures.join("\n  "));
}
