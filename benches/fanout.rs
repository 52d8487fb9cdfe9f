//! Room fan-out: one publish reaching every member of a room of 10, 1,000 and
//! 10,000 connections, in process.
//!
//! The pieces are the server's own: the supervision tree on a multi-thread
//! tokio runtime, rooms joined through the `RoomRegistry`, and the publish
//! sent through the `RoomHandle` a connection holds after its join. Each
//! member is an actix actor on one of several arbiters (as connections live
//! on several HTTP workers), with a mailbox bounded by the default
//! `limits.outbound_queue`, reached through a real `Outbox`. The only thing
//! missing is the socket: a member counts the `message` frames it is handed
//! instead of writing them.
//!
//! One iteration publishes one message and ends when the last member has it,
//! so the time covers the room's serialisation, one `try_send` per member and
//! every mailbox being drained. Throughput is members reached per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use herald::connection::{ConnId, Control, Member, Outbound, Outbox};
use herald::protocol::ServerKind;
use herald::rooms::{RoomHandle, RoomRegistry};
use herald::Config;
use serde_json::value::RawValue;

mod support;

const SIZES: [u64; 3] = [10, 1_000, 10_000];

/// Members are connections of this many users, like tabs. Only a user's first
/// connection makes the room announce `user_joined` to everyone, so building
/// a room of 10,000 does not cost 10,000² frames; a publish reaches every
/// connection either way.
const USERS: u64 = 16;

/// Longer than any fan-out can take on a loaded machine; past it the bench
/// fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(60);

/// `message` frames received by all members of one room so far, and the count
/// at which the message in flight has reached everyone.
struct Tally {
    received: AtomicU64,
    target: AtomicU64,
    done: Sender<()>,
}

impl Tally {
    fn arrived(&self) {
        let received = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if received == self.target.load(Ordering::Acquire) {
            let _ = self.done.send(());
        }
    }
}

/// A connection without a socket: takes frames from its mailbox as the
/// WebSocket actor does, and counts messages instead of writing them.
struct Connection {
    tally: Arc<Tally>,
}

impl Actor for Connection {
    type Context = Context<Self>;
}

impl Handler<Outbound> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        if let Outbound::Frame(frame) = msg {
            if frame.kind == ServerKind::Message {
                self.tally.arrived();
            }
        }
    }
}

/// A room with `members` connections and a publisher among them.
struct BenchRoom {
    members: u64,
    handle: RoomHandle,
    publisher: (ConnId, Arc<str>),
    data: Box<RawValue>,
    tally: Arc<Tally>,
    done: Receiver<()>,
}

impl BenchRoom {
    fn build(actors: &tokio::runtime::Runtime, rooms: &RoomRegistry, workers: &[Arbiter], members: u64) -> Self {
        let (done_tx, done) = channel();
        let tally = Arc::new(Tally { received: AtomicU64::new(0), target: AtomicU64::new(0), done: done_tx });
        let name: Arc<str> = format!("bench:fanout:{members}").into();
        let capacity = Config::default().limits.outbound_queue;
        let mut handle = None;
        for conn in 0..members {
            let worker = workers[conn as usize % workers.len()].handle();
            let connection = Connection { tally: tally.clone() };
            let addr = Connection::start_in_arbiter(&worker, move |ctx| {
                ctx.set_mailbox_capacity(capacity);
                connection
            });
            let outbox = Outbox::new(addr.recipient(), Arc::new(Control::default()));
            let member = Member { conn: ConnId(conn), user: format!("user-{}", conn % USERS).into(), outbox };
            let (room, _) = actors.block_on(rooms.join(name.clone(), member)).expect("the room takes the join");
            handle = Some(room);
        }
        Self {
            members,
            handle: handle.expect("a room has members"),
            publisher: (ConnId(0), "user-0".into()),
            data: serde_json::from_str(r#"{"text":"hello, room"}"#).expect("valid JSON"),
            tally,
            done,
        }
    }

    /// Publishes one message (echoed, so the publisher counts too) and waits
    /// until every member has it.
    fn publish_to_all(&self) {
        self.tally.target.fetch_add(self.members, Ordering::AcqRel);
        let (conn, user) = &self.publisher;
        self.handle.publish(*conn, user.clone(), &self.data, true, None);
        self.done.recv_timeout(PATIENCE).expect("every member received the message");
    }
}

fn fanout(c: &mut Criterion) {
    let (actors, tree) = support::start_tree();
    let cores = support::cores();
    // Arbiters need a registered actix system; they run on their own threads.
    let _system = System::new();
    let workers: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();

    let mut group = c.benchmark_group("fanout");
    // Equal samples rather than growing ones: at 10,000 members one iteration
    // takes milliseconds, and growing samples would overrun the time budget.
    group.sampling_mode(SamplingMode::Flat);
    for members in SIZES {
        let room = BenchRoom::build(&actors, &tree.rooms, &workers, members);
        room.publish_to_all();
        group.throughput(Throughput::Elements(members));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    room.publish_to_all();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
    for worker in workers {
        worker.stop();
    }
}

/// Few samples: a 10,000-member iteration takes milliseconds. Flags such as
/// `--measurement-time` still override these.
fn short() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short();
    targets = fanout
}
criterion_main!(benches);
