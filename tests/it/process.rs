//! The real `herald` binary as a child process, where a test can measure its
//! memory, limit its file descriptors and send it signals: a slow consumer,
//! the file limit, graceful shutdown on SIGTERM and SIGINT, start-up logs.

use crate::support::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::{self, Message};

/// The drain timeout the shutdown tests configure.
const SHUTDOWN_TIMEOUT_MS: u64 = 2000;

type Ws<S> = tokio_tungstenite::WebSocketStream<S>;

/// Starts `herald` with `toml` and, when given, a file limit of `nofile`;
/// returns once `/healthz` answers. It logs at info.
async fn start_herald(toml: &str, nofile: Option<u64>) -> Herald {
    let mut command = HeraldCommand::new()
        .config(toml)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // mimalloc returns freed memory to the OS at once, so that RSS
        // shows what the server holds rather than what the allocator caches
        // (README: "Running it under pressure").
        .env("MIMALLOC_PURGE_DELAY", "0");
    if let Some(nofile) = nofile {
        command = command.file_limit(nofile);
    }
    command.start().await
}

/// The next text frame of `ws` as JSON, within `wait`.
async fn next_json<S>(ws: &mut Ws<S>, wait: Duration) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Opens a WebSocket and reads its `welcome`, all within 1 s; `None` if that fails.
async fn open(url: &str) -> Option<Ws<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
    tokio::time::timeout(Duration::from_secs(1), async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let welcome = next_json(&mut ws, Duration::from_secs(1)).await?;
        (welcome["type"] == "welcome").then_some(ws)
    })
    .await
    .ok()
    .flatten()
}

/// Whether an application `ping` on `ws` gets its `pong`.
async fn pongs<S>(ws: &mut Ws<S>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::Text(json!({"type": "ping", "id": "p"}).to_string().into())).await.is_err() {
        return false;
    }
    while let Some(frame) = next_json(ws, WAIT).await {
        if frame["type"] == "pong" {
            return frame["id"] == "p";
        }
    }
    false
}

// ---- slow consumer -------------------------------------------------------

/// Publishes `messages` frames of 64 KiB from `publisher` (with `echo:false`)
/// into `room` while `reader` reads them on a task; returns the reader and the
/// `seq` of every `message` it got. The publisher stays at most `WINDOW`
/// messages ahead of the reader, below `outbound_queue`, so the reader can
/// never become a slow consumer itself.
async fn flood(publisher: &mut Client, mut reader: Client, room: &str, messages: u64) -> (Client, Vec<u64>) {
    const WINDOW: u64 = 32;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(messages as usize);
        while (seqs.len() as u64) < messages {
            match reader.next_event_within(Duration::from_secs(20)).await {
                Some(Event::Frame(frame)) if frame["type"] == "message" => {
                    seqs.push(frame["seq"].as_u64().expect("seq is a number"));
                    progress_tx.send_replace(seqs.len() as u64);
                }
                Some(Event::Frame(_)) => {}
                other => panic!("reader got {other:?} after {} messages", seqs.len()),
            }
        }
        (reader, seqs)
    });
    let data = "x".repeat(64 * 1024);
    let frame = json!({"type": "publish", "room": room, "data": data, "echo": false}).to_string();
    for sent in 0..messages {
        while sent - *progress.borrow_and_update() >= WINDOW {
            if progress.changed().await.is_err() {
                break; // the reader is gone; its panic is reported below
            }
        }
        publisher.send_text(&frame).await;
    }
    let (reader, seqs) = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reader gets every message in time")
        .expect("the reader task");
    assert_eq!(seqs.len() as u64, messages);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "seq strictly increasing: {seqs:?}");
    assert_eq!(seqs[seqs.len() - 1] - seqs[0] + 1, messages, "no seq skipped");
    (reader, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_dropped_while_the_room_gets_everything_and_memory_stays_flat() {
    const MESSAGES: u64 = 1600; // 100 MiB of `data`
    let toml = format!(
        "[server]\nnode_id = \"proc\"\n\n[auth]\njwt_secret = \"{SECRET}\"\n\n[limits]\noutbound_queue = 64\n\
         max_message_bytes = 131072\nrate_per_sec = 1000000\nrate_burst = 1000000\n"
    );
    let herald = start_herald(&toml, None).await;
    let mut slow = ws_connect_as(&herald, "slow").await;
    let mut reader = ws_connect_as(&herald, "reader").await;
    let mut publisher = ws_connect_as(&herald, "publisher").await;
    reader.join("flood").await;
    publisher.join("flood").await;
    let rss_connected = rss_kb(herald.pid());
    // The first flood of 64 KiB frames raises RSS by ~20 MB with no slow
    // consumer at all (buffers and allocator caches reaching their working
    // size; flat over later floods), so the baseline is taken after one.
    let (reader, _) = flood(&mut publisher, reader, "flood", MESSAGES).await;
    slow.join("flood").await;
    let rss_before = rss_kb(herald.pid());

    // Samples the server's RSS through the flood.
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (flooding, pid) = (flooding.clone(), herald.pid());
        async move {
            let mut peak = 0;
            while flooding.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        }
    });
    // `slow` never reads from here on; the reader still gets every message.
    let (_reader, _) = flood(&mut publisher, reader, "flood", MESSAGES).await;

    // The slow consumer leaves presence.
    let deadline = Instant::now() + Duration::from_secs(10);
    let users = loop {
        publisher.send(json!({"type": "presence", "room": "flood"})).await;
        let users = publisher.recv_type("presence").await["users"].clone();
        if !users.as_array().expect("users list").contains(&json!("slow")) || Instant::now() > deadline {
            break users;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut users: Vec<&str> = users.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    users.sort();
    assert_eq!(users, ["publisher", "reader"], "the slow consumer should have left presence");

    // Its connection ends: its backlog, then a 4008 close or the end of the stream.
    let mut backlog = 0;
    let end = loop {
        match slow.next_event_within(Duration::from_secs(10)).await {
            Some(Event::Frame(_)) => backlog += 1,
            Some(Event::Closed(close)) => break close,
            None => panic!("the slow consumer's connection is still open after {backlog} backlog frames"),
        }
    };
    assert!(matches!(end, None | Some((4008, _))), "slow consumer closed with {end:?}");

    let metrics = Snapshot::take(&herald).await;
    let dropped = metrics.value(r#"herald_connections_dropped_total{reason="slow_consumer"}"#);
    assert_eq!(dropped, Some(1.0), "{}", metrics.0);
    let open_is_two = || async { Snapshot::take(&herald).await.value(OPEN_WS) == Some(2.0) };
    assert!(eventually(WAIT, open_is_two).await, "the slow consumer's connection is still counted as open");

    flooding.store(false, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let rss_after = rss_kb(herald.pid());
    let growth_kb = rss_after as i64 - rss_before as i64;
    let peak_kb = peak as i64 - rss_before as i64;
    println!(
        "slow consumer: RSS {rss_connected} kB connected, {rss_before} kB after a warm-up flood, peak {peak} kB \
         (+{peak_kb} kB) during the flood with a stalled member, {rss_after} kB after it: growth {growth_kb} kB \
         ({MESSAGES} x 64 KiB published; the slow consumer's backlog read afterwards: {backlog} frames)"
    );
    assert!(growth_kb < 8 * 1024, "RSS grew by {growth_kb} kB (before {rss_before} kB, after {rss_after} kB)");
    // Holding the backlog would take over 100 MB; the queue is 64 frames of
    // 64 KiB, shared with the other members.
    assert!(peak_kb < 24 * 1024, "RSS peaked {peak_kb} kB above the baseline during the flood");
}

// ---- the file limit ------------------------------------------------------

/// Opens WebSocket connections until upgrades stop completing (three
/// failures in a row), at most `tries`.
async fn open_until_refused(url: &str, tries: usize) -> (Vec<Ws<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>, u32) {
    let (mut held, mut failures) = (Vec::new(), 0);
    for _ in 0..tries {
        match open(url).await {
            Some(ws) => {
                held.push(ws);
                failures = 0;
            }
            None if failures == 2 => {
                failures += 1;
                break;
            }
            None => failures += 1,
        }
    }
    (held, failures)
}

#[tokio::test]
async fn by_default_the_file_limit_caps_connections_and_keeps_operators_served() {
    let herald = start_herald("[server]\nnode_id = \"proc\"\n", Some(96)).await;
    let logged = || async { herald.log().contains("file_limit=96") };
    assert!(eventually(WAIT, logged).await, "start-up log should report the limit:\n{}", herald.log());

    let (mut held, failures) = open_until_refused(&herald.ws_url(), 150).await;
    println!("file limit 96: {} WebSocket connections held before upgrades were refused", held.len());
    assert_eq!(failures, 3, "150 connections opened under a file limit of 96");
    assert!(held.len() >= 30, "only {} connections before the limit", held.len());

    // At the limit, operators are still served and the refusals are counted,
    // and the process never ran out of descriptors.
    assert_eq!(fetch(herald.addr, "/healthz").await.map(|(status, _)| status), Some(200));
    assert_eq!(fetch(herald.addr, "/readyz").await.map(|(status, _)| status), Some(200));
    let metrics = Snapshot::try_take(&herald).await.expect("/metrics answers 200 at the limit");
    let refused = metrics.value(r#"herald_connections_refused_total{reason="max_connections"}"#).unwrap_or(0.0);
    assert!(refused >= 3.0, "refusals at the limit: {refused}\n{}", metrics.0);
    assert_eq!(metrics.value("herald_connections_accept_errors_total"), Some(0.0), "{}", metrics.0);
    let last = held.len() - 1;
    for i in [0, last] {
        assert!(pongs(&mut held[i]).await, "connection {i} of {} no longer answers at the limit", held.len());
    }
    // One leaves, one more gets in.
    held.pop();
    assert!(eventually(Duration::from_secs(10), || async { open(&herald.ws_url()).await.is_some() }).await, "no new connection");
}

#[tokio::test]
async fn past_the_file_limit_open_connections_are_served_and_accepting_resumes() {
    // A configured limit above what the file limit allows: accepting fails
    // with EMFILE, and the node rides it out.
    let herald = start_herald("[server]\nnode_id = \"proc\"\n[limits]\nmax_connections = 1000\n", Some(96)).await;
    let logged = || async { herald.log().contains("file_limit=96") };
    assert!(eventually(WAIT, logged).await, "start-up log should report the limit:\n{}", herald.log());
    let url = herald.ws_url();

    let (mut held, failures) = open_until_refused(&url, 150).await;
    println!("file limit 96: {} WebSocket connections held before upgrades failed", held.len());
    assert_eq!(failures, 3, "150 connections opened under a file limit of 96");
    assert!(held.len() >= 30, "only {} connections before the limit", held.len());

    let last = held.len() - 1;
    for i in [0, last / 2, last] {
        assert!(pongs(&mut held[i]).await, "connection {i} of {} no longer answers at the limit", held.len());
    }

    // Frees 20 descriptors: /metrics can be scraped and shows the failed accepts.
    held.drain(..20);
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        match Snapshot::try_take(&herald).await {
            Some(metrics) => break metrics,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("/metrics after closing 20 connections: no 200 within 10 s\n{}", herald.log()),
        }
    };
    let errors = metrics.value("herald_connections_accept_errors_total").unwrap_or(0.0);
    assert!(errors > 0.0, "herald_connections_accept_errors_total is {errors}:\n{}", metrics.0);

    // New connections are accepted again, and the held ones still work.
    assert!(eventually(Duration::from_secs(10), || async { open(&url).await.is_some() }).await, "no new connection");
    let last = held.len() - 1;
    for i in [0, last] {
        assert!(pongs(&mut held[i]).await, "held connection {i} stopped answering");
    }
}

// ---- graceful shutdown ---------------------------------------------------

/// Three WebSocket clients (one in a room) get close 1001 on `signal`, an
/// SSE stream ends, and the process exits with status 0 within the drain
/// timeout plus a margin.
async fn drains_on(signal: libc::c_int) {
    let toml = format!("[server]\nnode_id = \"proc\"\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n");
    let mut herald = start_herald(&toml, None).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(ws_connect(&herald).await.0);
    }
    clients[0].join("lobby").await;
    let mut sse = sse_open(&herald, "rooms=lobby").await;
    assert_eq!(sse.status, 200);
    let signalled = Instant::now();
    herald.signal(signal);
    for (i, client) in clients.iter_mut().enumerate() {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1001, "client {i} closed with {code} {reason:?}");
    }
    let mut said = Vec::new();
    loop {
        match sse.next_within(WAIT).await {
            Some(SseItem::Comment(comment)) => said.push(comment),
            Some(SseItem::End) => break,
            other => panic!("the SSE stream should end on {signal}, got {other:?}"),
        }
    }
    assert!(said.iter().any(|c| c.starts_with("close 1001")), "the stream says why it ends: {said:?}");
    let status = herald.exit_by(signalled + Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 3000)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", herald.log());
    println!("signal {signal}: exited {:?} after the signal", signalled.elapsed());
}

#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_0() {
    drains_on(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_closes_connections_with_1001_and_exits_0() {
    drains_on(libc::SIGINT).await;
}

#[tokio::test]
async fn during_the_drain_readiness_and_upgrades_answer_503() {
    let toml = format!(
        "[server]\nnode_id = \"proc\"\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n\n[limits]\n\
         outbound_queue = 100000\nmax_message_bytes = 131072\nrate_per_sec = 1000000\nrate_burst = 1000000\n"
    );
    let mut herald = start_herald(&toml, None).await;
    let url = herald.ws_url();

    // A room member that never reads, with a tiny receive buffer: once the
    // publisher has filled its socket it cannot take its close frame, so the
    // drain lasts until `shutdown_timeout_ms`.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(herald.addr).await.expect("connect");
    let (mut stuck, _) = tokio_tungstenite::client_async(url.as_str(), stream).await.expect("upgrade");
    assert_eq!(next_json(&mut stuck, WAIT).await.expect("welcome")["type"], "welcome");
    stuck.send(Message::Text(json!({"type": "join", "room": "drain"}).to_string().into())).await.expect("join");
    assert_eq!(next_json(&mut stuck, WAIT).await.expect("joined")["type"], "joined");

    // 10 MB for it: more than the server's socket send buffer (4 MB at most here).
    let (mut publisher, _) = ws_connect(&herald).await;
    publisher.join("drain").await;
    let data = "x".repeat(64 * 1024);
    const MESSAGES: u64 = 160;
    for i in 0..MESSAGES {
        let mut frame = json!({"type": "publish", "room": "drain", "data": data, "echo": false});
        if i == MESSAGES - 1 {
            frame["id"] = json!("last");
        }
        publisher.send(frame).await;
    }
    let ack = publisher.recv_type("ack").await;
    assert_eq!(ack["id"], "last", "{ack}");

    let signalled = Instant::now();
    herald.signal(libc::SIGTERM);
    let readiness = loop {
        match fetch(herald.addr, "/readyz").await.map(|r| r.0) {
            Some(200) if signalled.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => break other,
        }
    };
    assert_eq!(readiness, Some(503), "/readyz after SIGTERM\n{}", herald.log());
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503, "upgrade during the drain"),
        Err(other) => panic!("upgrade during the drain failed without a response: {other}"),
        Ok(_) => panic!("an upgrade during the drain was accepted"),
    }
    assert_eq!(fetch(herald.addr, "/readyz").await.map(|r| r.0), Some(503), "still draining");

    let (code, _) = publisher.expect_close().await;
    assert_eq!(code, 1001);
    let status = herald.exit_by(signalled + Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 3000)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", herald.log());
    println!("drain with a stuck client: exited {:?} after SIGTERM", signalled.elapsed());
    drop(stuck);
}

// ---- supervision -----------------------------------------------------------

#[tokio::test]
async fn presence_failing_past_the_restart_limit_stops_the_process_with_status_70() {
    let toml = format!(
        "[server]\nnode_id = \"proc\"\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n\n[api]\nkey = \"k\"\n\n\
         [debug]\nfault_injection = true\n\n[supervision]\nmax_restarts = 1\nwindow_ms = 60000\n"
    );
    let mut herald = start_herald(&toml, None).await;
    let (mut client, _) = ws_connect(&herald).await;
    let crash = r#"{"target":"presence"}"#;
    // The first failure is restarted...
    let (status, reply) = api(herald.addr, "POST", "/api/debug/crash", Some("k"), crash).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(client.request(json!({"type": "ping", "id": 1})).await["type"], "pong");
    // ...the second within the window is one too many: the root gives up.
    let mut stream = tokio::net::TcpStream::connect(herald.addr).await.expect("connect");
    let request = format!(
        "POST /api/debug/crash HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{crash}",
        crash.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let gave_up = Instant::now();
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 1001, "open connections are drained");
    let status = herald.exit_by(gave_up + Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 3000)).await;
    assert_eq!(status.code(), Some(70), "exit status {status}\n{}", herald.log());
    let stderr = herald.stderr();
    assert!(
        stderr.contains("herald: supervision gave up: the presence actor failed"),
        "the last line says why:\n{stderr}"
    );
    assert!(stderr.contains("past the limit of 1 restarts within 60000 ms"), "{stderr}");
}

// ---- start-up ------------------------------------------------------------

#[tokio::test]
async fn start_up_logs_the_file_limit() {
    let herald = start_herald("[server]\nnode_id = \"proc\"\n", None).await;
    let logged = || async { herald.log().contains("file limit") };
    assert!(eventually(WAIT, logged).await, "no `file limit` line in the start-up log:\n{}", herald.log());
    // Logs are diagnostics: stderr, like the binary's own errors; stdout is
    // for what was asked for (`--help`, `--check-config`).
    assert!(herald.stderr().contains("file limit"), "the start-up log is not on stderr:\n{}", herald.log());
}
