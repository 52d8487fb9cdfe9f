//! Room fan-out: one publish reaching every member of a room of 10, 1,000 and
//! 10,000 connections, in process.
//!
//! The pieces are the server's own: the supervision tree on a multi-thread
//! tokio runtime, rooms joined through the `RoomRegistry`, the publish sent
//! through the `RoomHandle` a connection holds after its join, and each
//! member a real `Outbox` over a real socket, so every delivery is the
//! server's own write path: one non-blocking `send` of the shared frame
//! bytes. Members share [`SOCKETS`] Unix socket pairs (a room of 10,000 with
//! a socket each would pass the file limit); reader threads drain the other
//! ends and count the bytes.
//!
//! Each size runs with history on (the default) and off: a message kept in
//! its room's history costs a reference to the frame already encoded, plus
//! the history's bookkeeping, on the publishing path.
//!
//! One iteration publishes one message and ends when the readers have every
//! member's copy, so the time covers the room's serialisation and one
//! `send` per member. Throughput is members reached per second.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use herald::delivery::{Bounds, ConnId, Member, Outbox};
use herald::ids::{RoomName, UserId};
use herald::protocol::ServerKind;
use herald::rooms::{RoomHandle, RoomRegistry};
use herald::metrics::TransportKind;
use herald::config::HistoryConfig;
use herald::Config;
use serde_json::value::RawValue;

mod support;

const SIZES: [u64; 3] = [10, 1_000, 10_000];

/// Socket pairs the members of one room share.
const SOCKETS: usize = 32;

/// Members are connections of this many users, like tabs. Only a user's first
/// connection makes the room announce `user_joined` to everyone, so building
/// a room of 10,000 does not cost 10,000² frames; a publish reaches every
/// connection either way.
const USERS: u64 = 16;

/// Longer than any fan-out can take on a loaded machine; past it the bench
/// fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Bytes the readers have taken off the members' sockets, and the count at
/// which the message in flight has reached everyone.
struct Tally {
    received: AtomicU64,
    target: AtomicU64,
    done: Sender<()>,
}

impl Tally {
    fn arrived(&self, bytes: u64) {
        let received = self.received.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let target = self.target.load(Ordering::Acquire);
        if target != 0 && received >= target && received - bytes < target {
            let _ = self.done.send(());
        }
    }
}

/// The sockets members write to, each drained by a thread of its own.
fn sockets(tally: &Arc<Tally>) -> Vec<UnixStream> {
    (0..SOCKETS)
        .map(|_| {
            let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
            ours.set_nonblocking(true).expect("non-blocking");
            let tally = tally.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n @ 1..) = theirs.read(&mut buf) {
                    tally.arrived(n as u64);
                }
            });
            ours
        })
        .collect()
}

/// A room with `members` connections and a publisher among them.
struct BenchRoom {
    members: u64,
    handle: RoomHandle,
    publisher: (ConnId, UserId),
    data: Box<RawValue>,
    tally: Arc<Tally>,
    done: Receiver<()>,
    /// Bytes of one `message` frame on the wire.
    frame_len: u64,
    /// The seq the next publish gets.
    next_seq: AtomicU64,
    _sockets: Vec<UnixStream>,
}

impl BenchRoom {
    fn build(actors: &tokio::runtime::Runtime, rooms: &RoomRegistry, members: u64) -> Self {
        let (done_tx, done) = channel();
        let tally = Arc::new(Tally { received: AtomicU64::new(0), target: AtomicU64::new(0), done: done_tx });
        let sockets = sockets(&tally);
        let name: RoomName = format!("bench:fanout:{members}").into();
        let limits = Config::default().limits;
        let bounds = Bounds::new(limits.outbound_queue, limits.outbound_queue_bytes);
        // Members carry only `message` frames: the joins' `user_joined`
        // frames would otherwise be in flight when timing starts.
        let carries = |kind| kind == ServerKind::Message;
        let mut handle = None;
        for conn in 0..members {
            let fd = sockets[conn as usize % SOCKETS].as_raw_fd();
            let outbox = Outbox::new(fd, TransportKind::WebSocket, carries, bounds);
            let member = Member { conn: ConnId(conn), user: format!("user-{}", conn % USERS).into(), outbox };
            let (room, _) = actors.block_on(rooms.join(name.clone(), member, None, None)).expect("the room takes the join");
            handle = Some(room);
        }
        let data: Box<RawValue> = serde_json::from_str(r#"{"text":"hello, room"}"#).expect("valid JSON");
        let frame_len = herald::protocol::ServerFrame::Message { room: &name, from: "user-0", data: &data, seq: 1, ts: herald::protocol::now_ms() }
            .encode()
            .wire()
            .len() as u64;
        Self {
            members,
            handle: handle.expect("a room has members"),
            publisher: (ConnId(0), "user-0".into()),
            data,
            tally,
            done,
            frame_len,
            next_seq: AtomicU64::new(1),
            _sockets: sockets,
        }
    }

    /// Publishes one message (echoed, so the publisher counts too) and waits
    /// until every member has it.
    fn publish_to_all(&self) {
        // A message's seq grows by a digit now and then; the readers wait for
        // the bytes of this one exactly, measured before the publish.
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let frame_len = self.frame_len + seq.to_string().len() as u64 - 1;
        self.tally.target.fetch_add(self.members * frame_len, Ordering::AcqRel);
        let (conn, user) = &self.publisher;
        self.handle.publish(*conn, user.clone(), &self.data, true, None);
        self.done.recv_timeout(PATIENCE).expect("every member received the message");
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    // Equal samples rather than growing ones: at 10,000 members one iteration
    // takes milliseconds, and growing samples would overrun the time budget.
    group.sampling_mode(SamplingMode::Flat);
    // With history (the default: every message kept in its room's history)
    // and without (`history.size = 0`), the rest alike: the cost of history
    // on the fan-out path is the ratio of the two.
    let off = HistoryConfig { size: 0, ..HistoryConfig::default() };
    let trees = [("history-on", support::start_tree_with(HistoryConfig::default())), ("history-off", support::start_tree_with(off))];
    for members in SIZES {
        // On and off side by side, size by size, so drift on a shared
        // machine falls on both alike.
        for (history, (actors, tree)) in &trees {
            let room = BenchRoom::build(actors, &tree.rooms, members);
            room.publish_to_all();
            group.throughput(Throughput::Elements(members));
            group.bench_function(BenchmarkId::new(*history, members), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        room.publish_to_all();
                    }
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
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
