//! A worker process: opens its share of the connections on one thread, then
//! runs the coordinator's commands against them.
//!
//! Everything here lives on a current-thread runtime, so the state every
//! connection touches ([`Shared`]) is plain `Cell`/`RefCell` without locks,
//! and one task per connection is the only per-connection cost beyond the
//! socket itself. Connections open at most [`IN_FLIGHT`] at a time, so the
//! server's accept backlog is never flooded.

mod connection;
mod polling;
mod storm;

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::cli::{Dialect, Transport};
use crate::dialect;
use crate::histogram::Micros;
use crate::ipc::{self, Command, Connected, Event, PresenceSeen, RoomPlan, Setup, StepDone, Trouble};
use crate::schedule::Step;

/// Connections opening at once in one worker.
const IN_FLIGHT: usize = 200;
/// Longest one connection may take to open, within the phase's deadline.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(30);
/// Longest the close of all connections may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// What the coordinator currently asks of the connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Stay open, answer heartbeats, publish nothing.
    Hold,
    /// Publish on the step's schedule (publishers) and measure deliveries (everyone).
    Step(Step),
    /// Close.
    Close,
}

/// Where a connection goes: the URL of its handshake and the address behind it.
pub(crate) struct Endpoint {
    pub url: String,
    pub target: SocketAddr,
}

impl Endpoint {
    async fn resolve(url: &str) -> Result<Self, String> {
        Ok(Self {
            url: url.to_string(),
            target: resolve(url).await?,
        })
    }
}

/// State shared by the worker's connection tasks.
pub(crate) struct Shared {
    pub dialect: Dialect,
    pub secret: Option<String>,
    pub endpoint: Endpoint,
    /// Where publishers connect instead of `endpoint`.
    pub publish_endpoint: Option<Endpoint>,
    pub pad: String,
    /// The step whose window deliveries are measured against, if one runs.
    pub step: Cell<Option<Step>>,
    pub stats: RefCell<Stats>,
    pub connect: RefCell<ConnectStats>,
    /// Connection tasks still running.
    pub live: Cell<usize>,
    /// Woken when a connection finishes opening (either way) or a task ends.
    pub progress: Notify,
}

impl Shared {
    /// The endpoint of the connection planned by `plan`.
    pub fn endpoint_of(&self, plan: &Plan) -> &Endpoint {
        match (&self.publish_endpoint, plan.publisher) {
            (Some(publish), Some(_)) => publish,
            _ => &self.endpoint,
        }
    }
}

/// Measurements of the running step, and trouble since the last report.
#[derive(Default)]
pub(crate) struct Stats {
    pub published: u64,
    pub deliveries: u64,
    pub latency: Micros,
    /// How late publishers sent, against their schedule.
    pub send_lag: Micros,
    /// Presence frames since the last report (taken with each, like `trouble`).
    pub presence: PresenceSeen,
    pub trouble: Trouble,
}

#[derive(Default)]
pub(crate) struct ConnectStats {
    pub connected: u64,
    pub failures: u64,
    pub failure_samples: Vec<String>,
    pub authenticated: u64,
    pub latency: Micros,
}

impl ConnectStats {
    fn resolved(&self) -> u64 {
        self.connected + self.failures
    }

    pub fn failed(&mut self, reason: &str) {
        self.failures += 1;
        ipc::push_sample(&mut self.failure_samples, reason);
    }

    /// What the coordinator is told once every connection is open or failed.
    pub fn report(&self, trouble: Trouble) -> Connected {
        Connected {
            connected: self.connected,
            failures: self.failures,
            failure_samples: self.failure_samples.clone(),
            authenticated: self.authenticated,
            connect_us: self.latency.to_pairs(),
            presence: PresenceSeen::default(),
            trouble,
        }
    }
}

/// What one connection is: its global index, where it connects from, its room.
pub(crate) struct Plan {
    pub index: usize,
    pub source: Option<Ipv4Addr>,
    pub room: Option<String>,
    /// Global publisher number, when this connection publishes.
    pub publisher: Option<usize>,
}

/// Runs a worker until `finish` or until stdin closes.
pub fn run() -> Result<(), String> {
    crate::raise_file_limit();
    // Started through `/proc/self/exe`, the process would be named `exe`;
    // keep the name that `ps -C herald-load` and `pgrep` look for.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"herald-load".as_ptr());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, serve());
    drop(local);
    // The stdin reader may still be blocked in a read; do not wait for it.
    runtime.shutdown_background();
    result
}

async fn serve() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let setup = match read_command(&mut lines).await? {
        Some(Command::Setup(setup)) => setup,
        Some(other) => return Err(format!("expected setup first, got {other:?}")),
        None => return Ok(()),
    };
    if let Some(plan) = setup.storm {
        return storm::serve(setup, plan, &mut lines).await;
    }
    let endpoint = Endpoint::resolve(&setup.url).await?;
    let publish_endpoint = match &setup.publish_url {
        Some(url) => Some(Endpoint::resolve(url).await?),
        None => None,
    };
    let mut setup = setup;
    for Endpoint { target, .. } in std::iter::once(&endpoint).chain(&publish_endpoint) {
        if !target.ip().is_loopback() && !setup.sources.is_empty() {
            // Loopback source addresses cannot reach another host.
            eprintln!("herald-load worker: {target} is not a loopback address; connecting without --sources");
            setup.sources.clear();
        }
    }
    let shared = Rc::new(Shared {
        dialect: setup.dialect,
        secret: setup.secret.clone(),
        endpoint,
        publish_endpoint,
        pad: dialect::padding(setup.rooms.map_or(0, |r| r.payload_bytes)),
        step: Cell::new(None),
        stats: RefCell::new(Stats::default()),
        connect: RefCell::new(ConnectStats::default()),
        live: Cell::new(0),
        progress: Notify::new(),
    });
    let (phase, phase_rx) = watch::channel(Phase::Hold);
    open_all(&shared, &setup, &phase_rx).await;
    let connected = {
        let mut stats = shared.stats.borrow_mut();
        let mut connected = shared.connect.borrow().report(std::mem::take(&mut stats.trouble));
        connected.presence = std::mem::take(&mut stats.presence);
        connected
    };
    emit(&Event::Connected(connected))?;
    loop {
        match read_command(&mut lines).await? {
            Some(Command::Step(step)) => {
                let done = run_step(&shared, &phase, step, setup.rooms, setup.first, setup.count).await;
                emit(&Event::StepDone(done))?;
            }
            Some(Command::Finish) => {
                close_all(&shared, &phase).await;
                let trouble = std::mem::take(&mut shared.stats.borrow_mut().trouble);
                return emit(&Event::Finished { trouble });
            }
            Some(Command::Setup(_)) => return Err("setup sent twice".into()),
            Some(other @ (Command::Drop(_) | Command::Verify { .. })) => {
                return Err(format!("only a recover worker runs {other:?}"))
            }
            // The coordinator is gone: nobody will read a report.
            None => {
                close_all(&shared, &phase).await;
                return Ok(());
            }
        }
    }
}

async fn read_command(lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>) -> Result<Option<Command>, String> {
    match lines.next_line().await.map_err(|e| format!("stdin: {e}"))? {
        None => Ok(None),
        Some(line) => serde_json::from_str(&line).map(Some).map_err(|e| format!("bad command {line:?}: {e}")),
    }
}

fn emit(event: &Event) -> Result<(), String> {
    ipc::write_line(&mut std::io::stdout().lock(), event).map_err(|e| format!("stdout: {e}"))
}

/// The address behind the URL's host and port (80 unless given).
async fn resolve(url: &str) -> Result<SocketAddr, String> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    addrs.find(SocketAddr::is_ipv4).ok_or_else(|| format!("{host}: no IPv4 address"))
}

/// Opens every connection of this worker, at most [`IN_FLIGHT`] at once, and
/// returns once each has opened or failed, or the phase's deadline passed.
async fn open_all(shared: &Rc<Shared>, setup: &Setup, phase: &watch::Receiver<Phase>) {
    let deadline = Instant::now() + Duration::from_millis(setup.connect_timeout_ms);
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut spawned = 0u64;
    for index in setup.first..setup.first + setup.count {
        let permit = tokio::select! {
            permit = gate.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let plan = Plan {
            index,
            source: match setup.sources.is_empty() {
                true => None,
                false => Some(setup.sources[index % setup.sources.len()]),
            },
            room: setup.room_of(index),
            publisher: setup.rooms.and_then(|r| r.publisher_of(index)),
        };
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
        shared.live.set(shared.live.get() + 1);
        match setup.transport {
            Transport::Websocket => {
                tokio::task::spawn_local(connection::run(shared.clone(), plan, attempt_deadline, permit, phase.clone()))
            }
            Transport::Polling => {
                tokio::task::spawn_local(polling::run(shared.clone(), plan, attempt_deadline, permit, phase.clone()))
            }
        };
        spawned += 1;
    }
    let never_tried = setup.count as u64 - spawned;
    for _ in 0..never_tried {
        shared.connect.borrow_mut().failed("connect phase deadline passed before the attempt");
    }
    while shared.connect.borrow().resolved() < setup.count as u64 {
        shared.progress.notified().await;
    }
}

/// Runs one step: publishers follow the schedule, everyone measures, and after
/// the drain the step's figures are taken and reset in one go.
async fn run_step(
    shared: &Rc<Shared>,
    phase: &watch::Sender<Phase>,
    step: Step,
    rooms: Option<RoomPlan>,
    first: usize,
    count: usize,
) -> StepDone {
    {
        let mut stats = shared.stats.borrow_mut();
        stats.published = 0;
        stats.deliveries = 0;
        stats.latency = Micros::new();
        stats.send_lag = Micros::new();
    }
    shared.step.set(Some(step));
    phase.send_replace(Phase::Step(step));
    tokio::time::sleep(Duration::from_micros(step.end_us().saturating_sub(crate::now_us()))).await;
    // No await from here on: the figures and the phase change together.
    shared.step.set(None);
    phase.send_replace(Phase::Hold);
    let scheduled: u64 = match rooms {
        Some(plan) => (first..first + count)
            .filter_map(|i| plan.publisher_of(i))
            .map(|k| step.publisher(k).measured().count() as u64)
            .sum(),
        None => 0,
    };
    let mut stats = shared.stats.borrow_mut();
    StepDone {
        published: stats.published,
        // Connections that failed to open never publish; their share shows here.
        unsent: scheduled.saturating_sub(stats.published),
        deliveries: stats.deliveries,
        latency_us: stats.latency.to_pairs(),
        send_lag_us: stats.send_lag.to_pairs(),
        presence: std::mem::take(&mut stats.presence),
        trouble: std::mem::take(&mut stats.trouble),
    }
}

/// Asks every connection to close and waits, within [`CLOSE_LIMIT`], until they have.
async fn close_all(shared: &Rc<Shared>, phase: &watch::Sender<Phase>) {
    phase.send_replace(Phase::Close);
    let _ = tokio::time::timeout(CLOSE_LIMIT, async {
        while shared.live.get() > 0 {
            shared.progress.notified().await;
        }
    })
    .await;
}
