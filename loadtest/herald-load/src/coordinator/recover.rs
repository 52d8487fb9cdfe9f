//! `recover`: a reconnect storm.
//!
//! The clients join their rooms; the publishers post to every room through
//! `/api/publish` at a fixed rate for the whole run; at one instant every
//! client drops its connection and rejoins with `since` and `epoch`. Once all
//! are back (or the deadline passed) the publishers go on for `--after-secs`,
//! stop, and after a drain each room's final `seq` is read from the history
//! API and every client is checked against it: each `seq` from its first
//! `joined` to the final one exactly once.

use std::time::{Duration, Instant};

use super::api::Api;
use super::publishers::{PublishPlan, Publishers, Via};
use super::{close, open_share, share, sleep_until_us, REPORT_SLACK, STEP_LEAD};
use crate::cli::{Dialect, PublishVia, RecoverArgs};
use crate::histogram::{round3, Micros};
use crate::ipc::{push_sample, room_name, Command, DropAt, Event, Rejoined, StormPlan, Trouble, Verified};
use crate::recovery::Tally;
use crate::report::RecoverReport;
use crate::server_stats::ServerProcess;

/// Time the workers get past the rejoin deadline (their own slack included) to report.
const REJOIN_REPORT_SLACK: Duration = Duration::from_secs(10);

fn check(args: &RecoverArgs) -> Result<(), String> {
    if args.common.dialect != Dialect::Herald {
        return Err("recover speaks Herald's dialect only (join with since, seq, epoch)".into());
    }
    if args.rooms == 0 || args.clients < args.rooms {
        return Err(format!("--clients {} must be at least --rooms {} (and that at least 1)", args.clients, args.rooms));
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be positive".into());
    }
    for (flag, secs) in [
        ("--before-secs", args.before_secs),
        ("--after-secs", args.after_secs),
        ("--recover-timeout-secs", args.recover_timeout_secs),
        ("--drain-secs", args.drain_secs),
    ] {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!("{flag} must be a number of seconds, not {secs}"));
        }
    }
    if args.publish_connections == 0 || args.reconnect_in_flight == 0 {
        return Err("--publish-connections and --reconnect-in-flight must be at least 1".into());
    }
    Ok(())
}

fn us(secs: f64) -> u64 {
    (secs * 1e6) as u64
}

pub(super) fn run(args: &RecoverArgs) -> Result<RecoverReport, String> {
    check(args)?;
    let base = match &args.api_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => Api::base_of(&args.common.url)?,
    };
    // The API must answer before anything is opened: the publishers or the
    // final check need it.
    let mut api = match (args.publish_via, &args.api_key) {
        (PublishVia::Ws, None) => None,
        (_, key) => Some(probe(&base, key.clone())?),
    };
    let server = args.common.server_pid.map(ServerProcess::new);
    let rss_before = server.and_then(|s| s.rss_kb());
    let mut share = share(&args.common, None, None)?;
    share.storm = Some(StormPlan { rooms: args.rooms, reconnect_in_flight: args.reconnect_in_flight });
    let (mut workers, connect, mut trouble) = open_share(&args.common, share, args.clients)?;

    let plan = PublishPlan {
        rooms: args.rooms,
        threads: args.publish_connections.min(args.rooms),
        rate: args.rate,
        t0_us: crate::now_us() + STEP_LEAD.as_micros() as u64,
        payload_bytes: args.payload_bytes,
    };
    let via = match args.publish_via {
        PublishVia::Api => Via::Api { base: base.clone(), key: args.api_key.clone() },
        PublishVia::Ws => Via::WebSocket {
            url: args.common.url.clone(),
            target: ws_target(&args.common.url)?,
            secret: args.common.secret.clone(),
            first_index: args.clients,
        },
    };
    let publishers = Publishers::start(plan, &via)?;
    let at = DropAt {
        at_us: plan.t0_us + us(args.before_secs),
        deadline_us: plan.t0_us + us(args.before_secs) + us(args.recover_timeout_secs),
    };
    eprintln!(
        "herald-load: publishing {} messages/s into {} rooms through {}; every client drops in {:.1} s",
        args.rate,
        args.rooms,
        match args.publish_via {
            PublishVia::Api => format!("{base}/api/publish"),
            PublishVia::Ws => format!("{} WebSocket connection(s)", plan.threads),
        },
        (at.at_us.saturating_sub(crate::now_us())) as f64 / 1e6
    );
    workers.broadcast(&Command::Drop(at))?;
    sleep_until_us(at.at_us);
    let cpu_at_drop = server.and_then(|s| s.cpu_secs());
    let report_by = Instant::now()
        + Duration::from_micros(at.deadline_us.saturating_sub(crate::now_us()))
        + REJOIN_REPORT_SLACK;
    let rejoins = workers.gather(report_by, "rejoined", |e| match e {
        Event::Rejoined(r) => Some(r),
        _ => None,
    })?;
    let cpu_rejoined = server.and_then(|s| s.cpu_secs());
    let mut report = storm_report(args, &rejoins, at);
    report.server_cpu_secs_storm = cpu_at_drop.zip(cpu_rejoined).map(|(a, b)| round3(b - a));
    eprintln!(
        "herald-load: {} of {} clients back: {} recovered, {} not recovered, {} not back; \
         all recovered after {} (per client p50 {} ms, p99 {} ms, max {} ms)",
        report.recovered_true + report.recovered_false,
        report.dropped,
        report.recovered_true,
        report.recovered_false,
        report.not_rejoined,
        report.all_recovered_secs.map_or("-- not all did".to_string(), |s| format!("{s} s")),
        report.recover_ms.p50,
        report.recover_ms.p99,
        report.recover_ms.max
    );
    rejoins.iter().for_each(|r| trouble.add(&r.trouble));

    std::thread::sleep(Duration::from_secs_f64(args.after_secs));
    let published = publishers.stop();
    eprintln!("herald-load: publishers stopped after {} publishes; draining {} s", published.published, args.drain_secs);
    std::thread::sleep(Duration::from_secs_f64(args.drain_secs));
    let mut final_seqs = Vec::with_capacity(args.rooms);
    for (room, last) in published.last_seq.iter().enumerate() {
        let name = room_name(room);
        let latest = match api.as_mut() {
            Some(api) => api.latest_seq(&name, last.unwrap_or(0))?,
            // Without the API, the last acknowledged publish is all there is to go by.
            None => last.unwrap_or(0),
        };
        if Some(latest) != *last {
            report.final_seq_mismatches += 1;
            push_sample(&mut report.final_seq_samples, &format!("{name}: final seq {latest}, last acknowledged {last:?}"));
        }
        final_seqs.push(latest);
    }
    workers.broadcast(&Command::Verify { final_seqs })?;
    let checks = workers.gather(Instant::now() + REPORT_SLACK, "verified", |e| match e {
        Event::Verified(v) => Some(v),
        _ => None,
    })?;
    add_checks(&mut report, &checks);
    checks.iter().for_each(|v| trouble.add(&v.trouble));
    report.server_rss_before_kb = rss_before;
    report.server_rss_after_kb = server.and_then(|s| s.rss_kb());
    trouble.add(&close(workers)?);

    report.connect = connect;
    report.trouble = trouble;
    report.published = published.published;
    report.publish_failures = published.failures;
    report.publish_failure_samples = published.failure_samples;
    report.publish_seq_jumps = published.seq_jumps;
    report.publish_ack_ms = published.ack.brief_percentiles();
    report.judge();
    eprintln!(
        "herald-load: checked {} clients: {} of {} messages missing, {} duplicated, {} out of order; {} replayed",
        report.check.checked,
        report.check.gaps,
        report.check.expected_messages,
        report.check.duplicates,
        report.check.out_of_order,
        report.replayed
    );
    for sample in report.check_samples.iter().chain(&report.recovered_false_samples) {
        eprintln!("herald-load:   {sample}");
    }
    Ok(report)
}

/// An API connection that has answered a history request with 200.
fn probe(base: &str, key: Option<String>) -> Result<Api, String> {
    let mut api = Api::new(base, key)?;
    let probe = format!("/api/rooms/{}/history?limit=1", room_name(0));
    let (status, body) = api.request("GET", &probe, None).map_err(|e| format!("{base}{probe}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "{base}{probe} answered {status} {body}: recover reads the rooms' final seq from the server API \
             (and publishes through it unless --publish-via ws); give --api-key (the server's api.key, \
             which must not be empty)"
        ));
    }
    Ok(api)
}

/// The address behind a `ws://host:port/...` URL.
fn ws_target(url: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let host = Api::base_of(url)?.trim_start_matches("http://").to_string();
    let with_port = match host.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => host.clone(),
        _ => format!("{host}:80"),
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .find(std::net::SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{host}: no IPv4 address"))
}

/// The storm's part of the report, from every worker's `rejoined`.
fn storm_report(args: &RecoverArgs, rejoins: &[Rejoined], at: DropAt) -> RecoverReport {
    let (mut recover, mut reconnect) = (Micros::new(), Micros::new());
    let mut report = RecoverReport {
        mode: "recover",
        publish_via: match args.publish_via {
            PublishVia::Api => "api",
            PublishVia::Ws => "ws",
        },
        rooms: args.rooms,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        before_secs: args.before_secs,
        after_secs: args.after_secs,
        connect: Default::default(),
        published: 0,
        publish_failures: 0,
        publish_failure_samples: Vec::new(),
        publish_seq_jumps: 0,
        publish_ack_ms: Default::default(),
        final_seq_mismatches: 0,
        final_seq_samples: Vec::new(),
        dropped: 0,
        recovered_true: 0,
        recovered_false: 0,
        recovered_false_samples: Vec::new(),
        not_rejoined: 0,
        not_rejoined_samples: Vec::new(),
        reconnect_retries: 0,
        reconnect_retry_samples: Vec::new(),
        epoch_changed: 0,
        all_recovered_secs: None,
        last_rejoin_secs: None,
        reconnect_ms: Default::default(),
        recover_ms: Default::default(),
        caught_up_ms: Default::default(),
        replayed: 0,
        check: Tally::default(),
        unchecked: 0,
        check_samples: Vec::new(),
        server_cpu_secs_storm: None,
        server_rss_before_kb: None,
        server_rss_after_kb: None,
        trouble: Trouble::default(),
        passed: false,
        failed_because: Vec::new(),
    };
    let (mut last_recovered, mut last_joined) = (None, None);
    for r in rejoins {
        report.dropped += r.dropped;
        report.recovered_true += r.recovered;
        report.recovered_false += r.unrecovered;
        report.not_rejoined += r.not_rejoined;
        report.reconnect_retries += r.retries;
        report.epoch_changed += r.epoch_changed;
        r.unrecovered_samples.iter().for_each(|s| push_sample(&mut report.recovered_false_samples, s));
        r.not_rejoined_samples.iter().for_each(|s| push_sample(&mut report.not_rejoined_samples, s));
        r.retry_samples.iter().for_each(|s| push_sample(&mut report.reconnect_retry_samples, s));
        recover.add_pairs(&r.recover_us);
        reconnect.add_pairs(&r.reconnect_us);
        last_recovered = last_recovered.max(r.last_recovered_us);
        last_joined = last_joined.max(r.last_joined_us);
    }
    let since_drop = |t: Option<u64>| t.map(|t| round3(t.saturating_sub(at.at_us) as f64 / 1e6));
    if report.dropped > 0 && report.recovered_true == report.dropped {
        report.all_recovered_secs = since_drop(last_recovered);
    }
    report.last_rejoin_secs = since_drop(last_joined);
    report.recover_ms = recover.brief_percentiles();
    report.reconnect_ms = reconnect.brief_percentiles();
    report
}

/// Adds every worker's check to the report.
fn add_checks(report: &mut RecoverReport, checks: &[Verified]) {
    let mut caught_up = Micros::new();
    for v in checks {
        report.check.add(&v.tally);
        report.unchecked += v.unchecked;
        report.replayed += v.replayed;
        v.samples.iter().for_each(|s| push_sample(&mut report.check_samples, s));
        caught_up.add_pairs(&v.caught_up_us);
    }
    report.caught_up_ms = caught_up.brief_percentiles();
}
