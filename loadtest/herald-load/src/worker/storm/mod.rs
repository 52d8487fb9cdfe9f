//! A worker's part of `recover`: its clients join their rooms and count
//! every message by `seq`; at the drop instant each closes its socket (no
//! close handshake, as when a network goes away), reconnects at once and
//! joins again with `since` = the highest `seq` it has and the room's `epoch`;
//! then it counts the replay and the live messages after it. On `verify` the
//! worker checks every client against its room's final `seq`.
//!
//! As in the other modes, everything runs on one thread, so the clients'
//! records are plain `RefCell`s, never borrowed across an await.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;

use super::connection::{close_reason, next_text, send, tcp_connect, websocket_config, Ws, CLOSE_WAIT};
use super::{emit, read_command, ConnectStats, Endpoint, ATTEMPT_LIMIT, CLOSE_LIMIT, IN_FLIGHT};
use crate::dialect::{self, Sequenced};
use crate::ipc::{self, Command, DropAt, Event, Setup, StormPlan, Trouble};
use crate::recovery::{Rejoin, Tracker};

mod records;

use records::{Client, Rejoins, State};

/// Shortest pause before a failed reconnect is tried again; clients spread
/// theirs over the next [`RETRY_SPREAD_MS`] so they do not come back in step.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_SPREAD_MS: u64 = 200;
/// Time a worker gives its clients past the rejoin deadline before reporting.
const REJOIN_SLACK: Duration = Duration::from_secs(5);

/// What the coordinator asks of the clients.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Hold,
    Drop(DropAt),
    Close,
}

/// The worker's state shared by its client tasks.
struct Storm {
    endpoint: Endpoint,
    secret: Option<String>,
    sources: Vec<Ipv4Addr>,
    plan: StormPlan,
    /// Global index of this worker's first client.
    first: usize,
    clients: RefCell<Vec<Client>>,
    connect: RefCell<ConnectStats>,
    rejoins: RefCell<Rejoins>,
    trouble: RefCell<Trouble>,
    /// Client tasks still running.
    live: Cell<usize>,
    /// Open clients whose rejoin is not settled yet (either way).
    unresolved: Cell<usize>,
    progress: Notify,
    /// Reconnects in progress after the drop.
    gate: Arc<Semaphore>,
}

/// Runs a `recover` worker from its setup to `finish`.
pub(super) async fn serve(
    setup: Setup,
    plan: StormPlan,
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> Result<(), String> {
    let endpoint = Endpoint::resolve(&setup.url).await?;
    let mut sources = setup.sources.clone();
    if !endpoint.target.ip().is_loopback() && !sources.is_empty() {
        eprintln!("herald-load worker: {} is not a loopback address; connecting without --sources", endpoint.target);
        sources.clear();
    }
    let storm = Rc::new(Storm {
        endpoint,
        secret: setup.secret.clone(),
        sources,
        plan,
        first: setup.first,
        clients: RefCell::new((0..setup.count).map(|_| Client::default()).collect()),
        connect: RefCell::new(ConnectStats::default()),
        rejoins: RefCell::new(Rejoins::default()),
        trouble: RefCell::new(Trouble::default()),
        live: Cell::new(0),
        unresolved: Cell::new(0),
        progress: Notify::new(),
        gate: Arc::new(Semaphore::new(plan.reconnect_in_flight.max(1))),
    });
    let (phase, phase_rx) = watch::channel(Phase::Hold);
    open_all(&storm, &setup, &phase_rx).await;
    let connected = storm.connect.borrow().report(std::mem::take(&mut *storm.trouble.borrow_mut()));
    emit(&Event::Connected(connected))?;
    loop {
        match read_command(lines).await? {
            Some(Command::Drop(at)) => {
                let dropped = storm.unresolved.get() as u64;
                phase.send_replace(Phase::Drop(at));
                let until = instant_of(at.deadline_us) + REJOIN_SLACK;
                let _ = tokio::time::timeout_at(until, async {
                    while storm.unresolved.get() > 0 {
                        storm.progress.notified().await;
                    }
                })
                .await;
                emit(&Event::Rejoined(storm.rejoined(dropped)))?;
            }
            Some(Command::Verify { final_seqs }) => {
                storm.until_caught_up(&final_seqs).await;
                emit(&Event::Verified(storm.verify(&final_seqs)))?
            }
            Some(Command::Finish) => {
                close_all(&storm, &phase).await;
                let trouble = std::mem::take(&mut *storm.trouble.borrow_mut());
                return emit(&Event::Finished { trouble });
            }
            Some(other) => return Err(format!("a recover worker cannot run {other:?}")),
            None => {
                close_all(&storm, &phase).await;
                return Ok(());
            }
        }
    }
}

/// Opens every client, at most [`IN_FLIGHT`] at once, and returns once each
/// has joined or failed, or the connect phase's deadline passed.
async fn open_all(storm: &Rc<Storm>, setup: &Setup, phase: &watch::Receiver<Phase>) {
    let deadline = Instant::now() + Duration::from_millis(setup.connect_timeout_ms);
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut spawned = 0u64;
    for local in 0..setup.count {
        let permit = tokio::select! {
            permit = gate.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
        storm.live.set(storm.live.get() + 1);
        tokio::task::spawn_local(client(storm.clone(), local, attempt_deadline, permit, phase.clone()));
        spawned += 1;
    }
    for _ in spawned..setup.count as u64 {
        storm.connect.borrow_mut().failed("connect phase deadline passed before the attempt");
    }
    loop {
        let resolved = {
            let c = storm.connect.borrow();
            c.connected + c.failures
        };
        if resolved >= setup.count as u64 {
            break;
        }
        storm.progress.notified().await;
    }
}

/// Asks every client to close and waits, within [`CLOSE_LIMIT`], until they have.
async fn close_all(storm: &Rc<Storm>, phase: &watch::Sender<Phase>) {
    phase.send_replace(Phase::Close);
    let _ = tokio::time::timeout(CLOSE_LIMIT, async {
        while storm.live.get() > 0 {
            storm.progress.notified().await;
        }
    })
    .await;
}

/// The [`Instant`] of a wall-clock time in µs since the epoch.
fn instant_of(t_us: u64) -> Instant {
    Instant::now() + Duration::from_micros(t_us.saturating_sub(crate::now_us()))
}

/// Counts the task as ended however it ends.
struct LiveGuard(Rc<Storm>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get() - 1);
        self.0.progress.notify_one();
    }
}

/// Counts an open client as unsettled until its rejoin is (or the task ends).
struct Unresolved {
    storm: Rc<Storm>,
    done: bool,
}

impl Unresolved {
    fn new(storm: &Rc<Storm>) -> Self {
        storm.unresolved.set(storm.unresolved.get() + 1);
        Self { storm: storm.clone(), done: false }
    }

    fn resolve(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.storm.unresolved.set(self.storm.unresolved.get() - 1);
            self.storm.progress.notify_one();
        }
    }
}

impl Drop for Unresolved {
    fn drop(&mut self) {
        self.resolve();
    }
}

/// A client's whole life: open and join, count, drop, rejoin, count, close.
async fn client(
    storm: Rc<Storm>,
    local: usize,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
    mut phase: watch::Receiver<Phase>,
) {
    let _live = LiveGuard(storm.clone());
    let index = storm.first + local;
    let room = ipc::room_name(storm.plan.room_of(index));
    let started = Instant::now();
    let opened = tokio::time::timeout_at(deadline, open(&storm, index, &room, None)).await;
    drop(permit);
    let opened = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => return storm.connect.borrow_mut().failed(&format!("#{index}: {reason}")),
        Err(_) => return storm.connect.borrow_mut().failed(&format!("#{index}: no joined before the deadline")),
    };
    {
        let mut connect = storm.connect.borrow_mut();
        connect.connected += 1;
        connect.authenticated += opened.authenticated as u64;
        connect.latency.record(started.elapsed().as_micros() as u64);
    }
    {
        let mut clients = storm.clients.borrow_mut();
        let c = &mut clients[local];
        c.tracker = Some(Tracker::new(opened.seq));
        c.epoch = opened.epoch;
        c.state = State::Open;
    }
    let mut unresolved = Unresolved::new(&storm);
    storm.progress.notify_one();
    let mut ws = opened.ws;
    match serve_client(&storm, local, &room, &mut ws, &mut phase, true).await {
        Served::Drop(at) => {
            // The socket goes away without a close handshake, as when the
            // network does; frames still unread are lost with it.
            drop(ws);
            let rejoined = rejoin(&storm, local, index, &room, at).await;
            unresolved.resolve();
            let Some(mut ws) = rejoined else { return };
            match serve_client(&storm, local, &room, &mut ws, &mut phase, false).await {
                Served::Early(reason) => ended(&storm, local, index, &reason),
                Served::Close | Served::Drop(_) => close(ws).await,
            }
        }
        Served::Close => close(ws).await,
        Served::Early(reason) => ended(&storm, local, index, &reason),
    }
}

fn ended(storm: &Storm, local: usize, index: usize, reason: &str) {
    storm.trouble.borrow_mut().closed(&format!("#{index}: {reason}"));
    storm.clients.borrow_mut()[local].state = State::Ended;
}

/// Closes politely and waits a little for the server's answer.
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// An open, joined connection and what its `joined` said.
struct Opened {
    ws: Ws,
    authenticated: bool,
    /// Wall clock (µs) of the `welcome`.
    welcome_us: u64,
    seq: u64,
    epoch: Option<String>,
    recovered: Option<bool>,
}

/// TCP connect, handshake, `welcome`, then `join` (with `since` and `epoch`
/// when given) until its `joined`.
async fn open(storm: &Storm, index: usize, room: &str, since: Option<(u64, Option<&str>)>) -> Result<Opened, String> {
    let source = match storm.sources.is_empty() {
        true => None,
        false => Some(storm.sources[index % storm.sources.len()]),
    };
    let stream = tcp_connect(storm.endpoint.target, source).await?;
    let url = match &storm.secret {
        Some(secret) => {
            let separator = if storm.endpoint.url.contains('?') { '&' } else { '?' };
            format!("{}{separator}token={}", storm.endpoint.url, crate::token::mint(secret, index)?)
        }
        None => storm.endpoint.url.clone(),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(websocket_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let text = next_text(&mut ws).await?;
    let authenticated = match dialect::decode_sequenced(&text) {
        Sequenced::Welcome { user } => {
            if storm.secret.is_some() {
                let want = crate::token::subject(index);
                if user.as_deref() != Some(want.as_str()) {
                    return Err(format!("welcome names user {user:?}, not {want}"));
                }
            }
            user.is_some_and(|u| !u.starts_with("anon:"))
        }
        _ => return Err(format!("before welcome: {text}")),
    };
    let welcome_us = crate::now_us();
    let join = match since {
        Some((since, epoch)) => dialect::join_since(room, since, epoch),
        None => dialect::join(crate::cli::Dialect::Herald, room),
    };
    send(&mut ws, &join).await?;
    loop {
        let text = next_text(&mut ws).await?;
        match dialect::decode_sequenced(&text) {
            Sequenced::Joined { room: joined, seq, epoch, recovered } if joined == room => {
                let seq = seq.ok_or_else(|| format!("joined without seq (a server without history?): {text}"))?;
                let epoch = epoch.map(|e| e.into_owned());
                return Ok(Opened { ws, authenticated, welcome_us, seq, epoch, recovered });
            }
            Sequenced::Presence { room: other } if other == room => {}
            _ => return Err(format!("waiting for joined: {text}")),
        }
    }
}

/// Why a client stopped serving.
enum Served {
    /// The drop instant came.
    Drop(DropAt),
    /// The worker asked for the close.
    Close,
    /// The server closed or the socket failed.
    Early(String),
}

/// Reads and counts frames until the drop instant (`armed`) or the close.
async fn serve_client(
    storm: &Storm,
    local: usize,
    room: &str,
    ws: &mut Ws,
    phase: &mut watch::Receiver<Phase>,
    armed: bool,
) -> Served {
    let mut due: Option<DropAt> = None;
    let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::from_secs(86_400)));
    if armed {
        if let Phase::Drop(at) = *phase.borrow_and_update() {
            due = Some(at);
            timer.as_mut().reset(instant_of(at.at_us));
        }
    }
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => on_text(storm, local, room, text.as_str()),
                Some(Ok(Message::Binary(bytes))) => {
                    storm.trouble.borrow_mut().unexpected(&format!("binary frame of {} bytes", bytes.len()));
                }
                Some(Ok(Message::Close(frame))) => return Served::Early(close_reason(frame.as_ref())),
                // WebSocket pings are answered by the library on the next read.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Served::Early(format!("read: {e}")),
                None => return Served::Early("connection ended".into()),
            },
            changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                Err(_) | Ok(Phase::Close) => return Served::Close,
                Ok(Phase::Drop(at)) if armed => {
                    due = Some(at);
                    timer.as_mut().reset(instant_of(at.at_us));
                }
                Ok(_) => {}
            },
            _ = timer.as_mut(), if due.is_some() => return Served::Drop(due.expect("armed")),
        }
    }
}

/// Counts one frame of an open client.
fn on_text(storm: &Storm, local: usize, room: &str, text: &str) {
    match dialect::decode_sequenced(text) {
        Sequenced::Message { room: r, seq: Some(seq), n } if r == room => {
            let mut clients = storm.clients.borrow_mut();
            let c = &mut clients[local];
            let Some(tracker) = c.tracker.as_mut() else { return };
            tracker.message(seq, n);
            if let State::Rejoined(_) = c.state {
                if seq <= c.target {
                    c.replayed += 1;
                }
                if c.caught_up_us.is_none() && tracker.last() >= c.target {
                    c.caught_up_us = Some(crate::now_us().saturating_sub(c.dropped_us));
                }
            }
        }
        Sequenced::Presence { room: r } if r == room => {}
        _ => storm.trouble.borrow_mut().unexpected(text),
    }
}

/// Reconnects and joins with `since` until a `joined` comes or the deadline
/// passes; failed attempts are tried again after a short pause.
async fn rejoin(storm: &Storm, local: usize, index: usize, room: &str, at: DropAt) -> Option<Ws> {
    let deadline = instant_of(at.deadline_us);
    let mut why = String::from("no attempt before the deadline");
    loop {
        let permit = tokio::select! {
            permit = storm.gate.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let (since, epoch) = {
            let clients = storm.clients.borrow();
            let c = &clients[local];
            (c.tracker.as_ref().map_or(0, Tracker::last), c.epoch.clone())
        };
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
        let attempt =
            tokio::time::timeout_at(attempt_deadline, open(storm, index, room, Some((since, epoch.as_deref())))).await;
        drop(permit);
        match attempt {
            Ok(Ok(opened)) => {
                rejoined(storm, local, index, room, at, since, &opened);
                return Some(opened.ws);
            }
            Ok(Err(reason)) => why = reason,
            Err(_) => why = "no joined in time".into(),
        }
        {
            let mut r = storm.rejoins.borrow_mut();
            r.retries += 1;
            ipc::push_sample(&mut r.retry_samples, &format!("#{index}: {why}"));
        }
        let pause = RETRY_MIN + Duration::from_millis(index as u64 * 7919 % RETRY_SPREAD_MS);
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut r = storm.rejoins.borrow_mut();
    r.not_rejoined += 1;
    ipc::push_sample(&mut r.not_rejoined_samples, &format!("#{index}: {why}"));
    storm.clients.borrow_mut()[local].state = State::NotRejoined;
    None
}

/// Records a rejoin's `joined`.
fn rejoined(storm: &Storm, local: usize, index: usize, room: &str, at: DropAt, since: u64, opened: &Opened) {
    let (now, seq) = (crate::now_us(), opened.seq);
    let mut r = storm.rejoins.borrow_mut();
    r.reconnect.record(opened.welcome_us.saturating_sub(at.at_us));
    r.last_joined_us = r.last_joined_us.max(Some(now));
    let mut clients = storm.clients.borrow_mut();
    let c = &mut clients[local];
    let rejoin = match opened.recovered {
        Some(true) => {
            r.recovered += 1;
            r.recover.record(now.saturating_sub(at.at_us));
            r.last_recovered_us = r.last_recovered_us.max(Some(now));
            Rejoin::Recovered
        }
        recovered => {
            r.unrecovered += 1;
            let said = match recovered {
                Some(_) => "recovered false".to_string(),
                None => "no recovered field".to_string(),
            };
            ipc::push_sample(
                &mut r.unrecovered_samples,
                &format!("#{index} {room}: since {since} epoch {:?}: joined seq {seq} epoch {:?}, {said}", c.epoch, opened.epoch),
            );
            Rejoin::Unrecovered { since, seq }
        }
    };
    if opened.epoch != c.epoch {
        r.epoch_changed += 1;
    }
    c.state = State::Rejoined(rejoin);
    c.since = since;
    c.target = seq;
    c.dropped_us = at.at_us;
    if c.tracker.as_ref().is_some_and(|t| t.last() >= seq) {
        c.caught_up_us = Some(now.saturating_sub(at.at_us));
    }
}
