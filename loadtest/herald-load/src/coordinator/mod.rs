//! The coordinator: runs a mode over worker processes, measures the server
//! from outside, and prints the report.
//!
//! Steps start at a wall-clock instant a little ahead (`t0`) that every worker
//! receives, so publishers in different processes share one schedule. Server
//! CPU is sampled at the start of the measured window and after the drain.

mod api;
mod publishers;
mod recover;
mod workers;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{
    CommonArgs, Dialect, FanoutArgs, IdleArgs, Mode, PublishArgs, RampArgs, ShapeArgs, Transport,
};
use crate::histogram::{round3, Micros};
use crate::ipc::{Command, Connected, Event, PresenceSeen, RoomPlan, StepDone, Trouble};
use crate::report::{ConnectSummary, FanoutReport, IdleReport, JoinSummary, RampReport, Thresholds, Verdict};
use crate::schedule::Step;
use crate::server_stats::ServerProcess;
use workers::{Share, Workers};

/// How far ahead of now a step's `t0` is set, so every worker has the step
/// before its first send is due.
const STEP_LEAD: Duration = Duration::from_millis(500);
/// Time after a step for stragglers to arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// Extra time a worker gets to report after it should have.
const REPORT_SLACK: Duration = Duration::from_secs(30);

/// Runs `mode` and returns the exit status.
pub fn run(mode: Mode) -> ExitCode {
    crate::raise_file_limit();
    let (json, outcome) = match mode {
        Mode::Idle(args) => (args.common.json, idle(&args).map(|r| finish(&r, args.common.json))),
        Mode::Fanout(args) => (args.common.json, fanout(&args).map(|r| finish(&r, args.common.json))),
        Mode::Ramp(args) => (args.common.json, ramp(&args).map(|r| finish(&r, args.common.json))),
        Mode::Recover(args) => (args.common.json, recover::run(&args).map(|r| finish(&r, args.common.json))),
        Mode::Worker => unreachable!("workers are dispatched by main"),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("herald-load: {error}");
            if json {
                println!("{}", serde_json::json!({ "error": error }));
            }
            ExitCode::from(2)
        }
    }
}

/// Prints the report and says whether the run passed.
fn finish<R: Verdict>(report: &R, json: bool) -> ExitCode {
    let failures = report.failures();
    match json {
        true => println!("{}", serde_json::to_string(report).expect("reports serialise")),
        false => println!("{}", serde_json::to_string_pretty(report).expect("reports serialise")),
    }
    if failures.is_empty() {
        eprintln!("herald-load: PASS");
        return ExitCode::SUCCESS;
    }
    eprintln!("herald-load: FAIL: {}", failures.join("; "));
    ExitCode::FAILURE
}

/// The URL workers connect to for the `url` given on the command line.
fn target_url(url: &str, dialect: Dialect, transport: Transport) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("ws://") else {
        return Err(format!("{url}: only ws:// URLs are supported"));
    };
    Ok(match (dialect, transport) {
        (Dialect::Herald, Transport::Websocket) => url.to_string(),
        (Dialect::Herald, Transport::Polling) => {
            return Err("--transport polling needs --dialect socketio".into())
        }
        (Dialect::Socketio, Transport::Websocket) => format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            url.trim_end_matches('/')
        ),
        (Dialect::Socketio, Transport::Polling) => format!(
            "http://{}/socket.io/?EIO=4&transport=polling",
            rest.trim_end_matches('/')
        ),
    })
}

fn share(
    common: &CommonArgs,
    publish_url: Option<&str>,
    rooms: Option<RoomPlan>,
) -> Result<Share, String> {
    Ok(Share {
        url: target_url(&common.url, common.dialect, Transport::Websocket)?,
        publish_url: publish_url
            .map(|url| target_url(url, common.dialect, Transport::Websocket))
            .transpose()?,
        dialect: common.dialect,
        transport: Transport::Websocket,
        secret: common.secret.clone(),
        sources: common.sources.0.clone(),
        rooms,
        room_prefix: String::new(),
        storm: None,
        connect_timeout: Duration::from_secs(common.connect_timeout_secs),
    })
}

/// Spawns the workers of `share` and waits until every connection has opened or failed.
fn open_share(common: &CommonArgs, share: Share, total: usize) -> Result<(Workers, ConnectSummary, Trouble), String> {
    if total == 0 {
        return Err("nothing to connect: the run needs at least one connection".into());
    }
    if common.per_process == 0 {
        return Err("--per-process must be at least 1".into());
    }
    let started = Instant::now();
    let started_us = crate::now_us();
    let mut workers = Workers::spawn(&share, total, common.per_process)?;
    eprintln!(
        "herald-load: opening {total} connections to {} from {} worker process(es)",
        share.url,
        workers.len()
    );
    if let (Some(url), Some(plan)) = (&share.publish_url, share.rooms) {
        eprintln!(
            "herald-load: the {} publishers among them connect to {url}",
            plan.total_publishers()
        );
    }
    let deadline = started + share.connect_timeout + REPORT_SLACK;
    let reports = workers.gather(deadline, "connected", |e| match e {
        Event::Connected(c) => Some(c),
        _ => None,
    })?;
    let secs = started.elapsed().as_secs_f64();
    let (mut summary, trouble) = summarise_connect(total, &reports, secs);
    summary.started_us = started_us;
    eprintln!(
        "herald-load: {} of {total} open in {:.2} s (connect p50 {} ms, p99 {} ms){}",
        total as u64 - summary.connect_failures,
        secs,
        summary.connect_ms.p50,
        summary.connect_ms.p99,
        match summary.presence.frames {
            0 => String::new(),
            n => format!(", {n} presence frames received meanwhile"),
        }
    );
    for sample in &summary.connect_failure_samples {
        eprintln!("herald-load:   failed: {sample}");
    }
    Ok((workers, summary, trouble))
}

fn summarise_connect(total: usize, reports: &[Connected], secs: f64) -> (ConnectSummary, Trouble) {
    let mut latency = Micros::new();
    let mut summary = ConnectSummary { connections: total as u64, connect_secs_total: round3(secs), ..Default::default() };
    let mut trouble = Trouble::default();
    for r in reports {
        latency.add_pairs(&r.connect_us);
        summary.connect_failures += r.failures;
        summary.authenticated += r.authenticated;
        summary.presence.add(&r.presence);
        for s in &r.failure_samples {
            crate::ipc::push_sample(&mut summary.connect_failure_samples, s);
        }
        trouble.add(&r.trouble);
    }
    summary.connect_ms = latency.brief_percentiles();
    (summary, trouble)
}

/// Tells the workers to close everything and returns what they saw meanwhile.
fn close(mut workers: Workers) -> Result<Trouble, String> {
    workers.broadcast(&Command::Finish)?;
    let reports = workers.gather(Instant::now() + REPORT_SLACK, "finished", |e| match e {
        Event::Finished { trouble } => Some(trouble),
        _ => None,
    })?;
    workers.wait(Duration::from_secs(5));
    let mut trouble = Trouble::default();
    reports.iter().for_each(|t| trouble.add(t));
    Ok(trouble)
}

fn idle(args: &IdleArgs) -> Result<IdleReport, String> {
    let server = args.common.server_pid.map(ServerProcess::new);
    let rss_before = server.and_then(|s| s.rss_kb());
    let mut share = share(&args.common, None, None)?;
    share.url = target_url(&args.common.url, args.common.dialect, args.transport)?;
    share.transport = args.transport;
    let (workers, connect, mut trouble) = open_share(&args.common, share, args.connections)?;
    eprintln!("herald-load: holding for {} s", args.hold_secs);
    let cpu_before = server.and_then(|s| s.cpu_secs());
    std::thread::sleep(Duration::from_secs(args.hold_secs));
    let cpu_after = server.and_then(|s| s.cpu_secs());
    let rss_after = server.and_then(|s| s.rss_kb());
    trouble.add(&close(workers)?);
    let open = connect.connections - connect.connect_failures;
    let cpu_idle = cpu_before.zip(cpu_after).map(|(b, a)| round3(a - b));
    let report = IdleReport {
        mode: "idle",
        hold_secs: args.hold_secs,
        server_rss_before_kb: rss_before,
        server_rss_after_kb: rss_after,
        rss_per_connection_bytes: rss_before
            .zip(rss_after)
            .filter(|_| open > 0)
            .map(|(b, a)| ((a as f64 - b as f64) * 1024.0 / open as f64).round()),
        server_cpu_secs_idle: cpu_idle,
        server_cpu_ms_per_sec_per_1k_conns: cpu_idle
            .filter(|_| open > 0 && args.hold_secs > 0)
            .map(|cpu| round3(cpu * 1000.0 / args.hold_secs as f64 / (open as f64 / 1000.0))),
        connect,
        trouble,
    };
    eprintln!(
        "herald-load: server RSS {:?} -> {:?} kB, {:?} bytes per connection, idle CPU {:?} s",
        report.server_rss_before_kb, report.server_rss_after_kb, report.rss_per_connection_bytes, report.server_cpu_secs_idle
    );
    Ok(report)
}

fn room_plan(shape: &ShapeArgs) -> Result<RoomPlan, String> {
    if shape.rooms == 0 || shape.members == 0 || shape.publishers == 0 {
        return Err("--rooms, --members and --publishers must be at least 1".into());
    }
    if shape.publishers > shape.members {
        return Err(format!("--publishers {} is more than --members {}", shape.publishers, shape.members));
    }
    Ok(RoomPlan { rooms: shape.rooms, members: shape.members, publishers: shape.publishers, payload_bytes: shape.payload_bytes })
}

fn check_rate(rate: f64, secs: f64) -> Result<(), String> {
    match rate.is_finite() && rate > 0.0 && secs.is_finite() && secs > 0.0 {
        true => Ok(()),
        false => Err("rates and durations must be positive".into()),
    }
}

/// The servers whose CPU time a step measures.
#[derive(Debug, Clone, Copy)]
struct Servers {
    /// The server at `--url`.
    server: Option<ServerProcess>,
    /// The server at `--publish-url`.
    publish_server: Option<ServerProcess>,
}

impl Servers {
    fn new(common: &CommonArgs, publish: &PublishArgs) -> Self {
        Self {
            server: common.server_pid.map(ServerProcess::new),
            publish_server: publish.publish_server_pid.map(ServerProcess::new),
        }
    }

    /// CPU seconds of each server, `None` for one not given or gone.
    fn cpu_secs(&self) -> (Option<f64>, Option<f64>) {
        (
            self.server.and_then(|s| s.cpu_secs()),
            self.publish_server.and_then(|s| s.cpu_secs()),
        )
    }
}

/// CPU seconds spent between two readings of the same server.
fn cpu_between(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    start.zip(end).map(|(s, e)| e - s)
}

/// Runs one step at `rate` on open connections and reports it.
fn step(
    workers: &mut Workers,
    shape: &ShapeArgs,
    servers: Servers,
    rate: f64,
    window_secs: f64,
    connect_failures: u64,
) -> Result<FanoutReport, String> {
    let plan = room_plan(shape)?;
    let step = Step {
        t0_us: crate::now_us() + STEP_LEAD.as_micros() as u64,
        warmup_us: (shape.warmup_secs.max(0.0) * 1e6) as u64,
        window_us: (window_secs * 1e6) as u64,
        drain_us: DRAIN.as_micros() as u64,
        rate,
        publishers: plan.total_publishers(),
    };
    eprintln!("herald-load: step at {rate} publishes/s for {window_secs} s (after {} s warm-up)", shape.warmup_secs);
    workers.broadcast(&Command::Step(step))?;
    sleep_until_us(step.window_start_us());
    let (cpu_start, publish_cpu_start) = servers.cpu_secs();
    sleep_until_us(step.end_us());
    let (cpu_end, publish_cpu_end) = servers.cpu_secs();
    let reports = workers.gather(Instant::now() + REPORT_SLACK, "step_done", |e| match e {
        Event::StepDone(done) => Some(done),
        _ => None,
    })?;
    let mut report = fanout_report(
        shape,
        rate,
        window_secs,
        &reports,
        cpu_between(cpu_start, cpu_end),
    );
    report.publish_server_cpu_secs = cpu_between(publish_cpu_start, publish_cpu_end).map(round3);
    report.connect_failures = connect_failures;
    report.judge(Thresholds { max_p99_ms: shape.max_p99_ms, max_loss: shape.max_loss });
    eprintln!(
        "herald-load:   {} published, {}/{} delivered (loss {}), latency ms p50 {} p99 {} max {}, server CPU {:?} s{}",
        report.published,
        report.deliveries,
        report.expected_deliveries,
        report.loss,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.max,
        report.server_cpu_secs,
        match report.held {
            true => " — held".to_string(),
            false => format!(" — not held: {}", report.not_held_because.join("; ")),
        }
    );
    Ok(report)
}

fn fanout_report(shape: &ShapeArgs, rate: f64, window_secs: f64, reports: &[StepDone], cpu: Option<f64>) -> FanoutReport {
    let mut latency = Micros::new();
    let mut send_lag = Micros::new();
    let mut trouble = Trouble::default();
    let mut presence = PresenceSeen::default();
    let (mut published, mut unsent, mut deliveries) = (0, 0, 0);
    for r in reports {
        presence.add(&r.presence);
        latency.add_pairs(&r.latency_us);
        send_lag.add_pairs(&r.send_lag_us);
        trouble.add(&r.trouble);
        published += r.published;
        unsent += r.unsent;
        deliveries += r.deliveries;
    }
    let expected = published * shape.members as u64;
    let cpu = cpu.map(round3);
    FanoutReport {
        mode: "fanout",
        rooms: shape.rooms,
        members: shape.members,
        publishers: shape.publishers,
        rate,
        duration_secs: window_secs,
        payload_bytes: shape.payload_bytes,
        published,
        unsent,
        expected_deliveries: expected,
        deliveries,
        loss: match expected {
            0 => 0.0,
            _ => 1.0 - deliveries as f64 / expected as f64,
        },
        deliveries_per_sec: round3(deliveries as f64 / window_secs),
        latency_ms: latency.percentiles(),
        send_lag_ms: send_lag.brief_percentiles(),
        server_cpu_secs: cpu,
        deliveries_per_server_cpu_sec: cpu
            .filter(|c| *c > 0.0)
            .map(|c| (deliveries as f64 / c).round()),
        publish_server_cpu_secs: None,
        presence_frames: presence.frames,
        presence_last_us: presence.last_us,
        joining: None,
        trouble,
        connect_failures: 0,
        held: false,
        not_held_because: Vec::new(),
    }
}

fn sleep_until_us(t_us: u64) {
    std::thread::sleep(Duration::from_micros(t_us.saturating_sub(crate::now_us())));
}

/// Connects the rooms of `shape` (publishers on `--publish-url` when given)
/// and names the servers a step measures.
fn connect_rooms(
    common: &CommonArgs,
    publish: &PublishArgs,
    shape: &ShapeArgs,
) -> Result<(Servers, Workers, ConnectSummary, Trouble), String> {
    let plan = room_plan(shape)?;
    let servers = Servers::new(common, publish);
    let mut share = share(common, publish.publish_url.as_deref(), Some(plan))?;
    share.room_prefix = shape.room_prefix.clone();
    let (workers, connect, before) = open_share(common, share, plan.rooms * plan.members)?;
    Ok((servers, workers, connect, before))
}

fn fanout(args: &FanoutArgs) -> Result<FanoutReport, String> {
    check_rate(args.rate, args.duration_secs)?;
    if !(args.settle_secs.is_finite() && args.settle_secs >= 0.0) {
        return Err("--settle-secs must be 0 or more".into());
    }
    let server = args.common.server_pid.map(ServerProcess::new);
    let (rss_before, cpu_before) = (server.and_then(|s| s.rss_kb()), server.and_then(|s| s.cpu_secs()));
    let (servers, mut workers, connect, before) = connect_rooms(&args.common, &args.publish, &args.shape)?;
    let settle = match (server, args.settle_secs > 0.0) {
        (Some(server), true) => {
            eprintln!("herald-load: waiting up to {} s for the server to go quiet", args.settle_secs);
            let settle = server.wait_quiet(Duration::from_secs_f64(args.settle_secs));
            eprintln!("herald-load: {}", match settle {
                Some((secs, true)) => format!("quiet after {secs:.1} s"),
                Some((secs, false)) => format!("still busy after {secs:.1} s; publishing anyway"),
                None => "the server is gone".into(),
            });
            settle
        }
        _ => None,
    };
    let (rss_joined, cpu_joined) = (server.and_then(|s| s.rss_kb()), server.and_then(|s| s.cpu_secs()));
    let mut report = step(
        &mut workers,
        &args.shape,
        servers,
        args.rate,
        args.duration_secs,
        connect.connect_failures,
    )?;
    // Trouble before the step (while joining) and after it (while closing)
    // belongs to the run as much as trouble during it.
    report.trouble.add(&before);
    report.trouble.add(&close(workers)?);
    let mut presence = connect.presence;
    presence.add(&PresenceSeen { frames: report.presence_frames, last_us: report.presence_last_us });
    report.presence_frames = presence.frames;
    report.presence_last_us = presence.last_us;
    report.joining = Some(JoinSummary {
        connections: connect.connections,
        connect_failure_samples: connect.connect_failure_samples,
        connect_secs_total: connect.connect_secs_total,
        connect_ms: connect.connect_ms,
        presence_frames_joining: connect.presence.frames,
        last_presence_secs: presence.last_us.map(|t| round3(t.saturating_sub(connect.started_us) as f64 / 1e6)),
        settle_secs: settle.map(|(secs, _)| round3(secs)),
        settled: settle.map(|(_, quiet)| quiet),
        server_rss_before_kb: rss_before,
        server_rss_joined_kb: rss_joined,
        server_cpu_secs_joining: cpu_between(cpu_before, cpu_joined).map(round3),
    });
    report.judge(Thresholds { max_p99_ms: args.shape.max_p99_ms, max_loss: args.shape.max_loss });
    Ok(report)
}

fn ramp(args: &RampArgs) -> Result<RampReport, String> {
    check_rate(args.start_rate, args.step_secs)?;
    if args.factor.is_nan() || args.factor <= 1.0 {
        return Err("--factor must be greater than 1".into());
    }
    let (servers, mut workers, connect, before) = connect_rooms(&args.common, &args.publish, &args.shape)?;
    let mut trouble = before;
    let mut steps: Vec<FanoutReport> = Vec::new();
    let mut rate = args.start_rate;
    while rate <= args.max_rate {
        let report = step(
            &mut workers,
            &args.shape,
            servers,
            rate,
            args.step_secs,
            connect.connect_failures,
        )?;
        trouble.add(&report.trouble);
        let held = report.held;
        steps.push(report);
        if !held {
            break;
        }
        rate = (rate * args.factor).round();
    }
    trouble.add(&close(workers)?);
    let max_held = steps.iter().rev().find(|s| s.held).cloned();
    Ok(RampReport {
        mode: "ramp",
        presence_frames_joining: connect.presence.frames,
        connect,
        max_held_rate: max_held.as_ref().map(|s| s.rate),
        max_held,
        steps,
        trouble,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn common(dialect: &str) -> CommonArgs {
        let cli = Cli::try_parse_from([
            "herald-load",
            "idle",
            "--connections",
            "1",
            "--dialect",
            dialect,
            "--url",
            "ws://127.0.0.1:3000",
        ]);
        match cli.unwrap().mode {
            Mode::Idle(args) => args.common,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn publish_url_is_checked_and_shaped_like_url() {
        assert_eq!(
            share(&common("herald"), None, None).unwrap().publish_url,
            None
        );
        let herald = share(&common("herald"), Some("ws://127.0.0.1:3001/ws"), None).unwrap();
        assert_eq!(
            herald.publish_url.as_deref(),
            Some("ws://127.0.0.1:3001/ws")
        );
        let socketio = share(&common("socketio"), Some("ws://127.0.0.1:3001/"), None).unwrap();
        assert_eq!(
            socketio.url,
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            socketio.publish_url.as_deref(),
            Some("ws://127.0.0.1:3001/socket.io/?EIO=4&transport=websocket")
        );
        assert!(share(&common("herald"), Some("http://127.0.0.1:3001/ws"), None).is_err());
    }

    #[test]
    fn polling_reaches_the_socketio_path_over_http() {
        assert_eq!(
            target_url("ws://127.0.0.1:3000/", Dialect::Socketio, Transport::Polling).unwrap(),
            "http://127.0.0.1:3000/socket.io/?EIO=4&transport=polling"
        );
        assert!(target_url("ws://127.0.0.1:3000/ws", Dialect::Herald, Transport::Polling).is_err());
    }
}
