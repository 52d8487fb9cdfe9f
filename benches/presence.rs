//! Presence registry costs, through the `Presence` handle of a supervision
//! tree started as the server starts it:
//!
//! - `join_leave`: 1,000 users arriving in a room and leaving it again, the
//!   updates rooms send on a user's first and last connection;
//! - `online_offline`: 1,000 connections coming online and going offline, as
//!   every connect and disconnect does;
//! - `room_users`: the presence registry's list of a room with 10, 1,000 and
//!   10,000 users, collected and sorted anew for each query (what a
//!   `presence` request cost before rooms kept their list, and what a
//!   cluster node's directory query still builds);
//! - `room_list`: a `presence` request as a single node answers it, from the
//!   room's own list, built once per change of its users and shared: the
//!   ratio to `room_users` is what sharing saves.
//!
//! Updates are fire-and-forget casts, so an update iteration ends with a query
//! round trip: the registry answers it only after every update sent before
//! it, which is when the batch has been applied. Throughput is updates (or
//! users listed) per second.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::delivery::{testing, ConnId, Member};
use herald::ids::{RoomName, UserId};
use herald::presence::Presence;
use herald::rooms::RoomRegistry;

mod support;

/// Users per update iteration.
const BATCH: u64 = 1_000;
const ROOM_SIZES: [u64; 3] = [10, 1_000, 10_000];

fn users(prefix: &str, count: u64) -> Vec<UserId> {
    (0..count).map(|n| format!("{prefix}-{n}").into()).collect()
}

/// Waits until the registry has applied everything sent before, and returns
/// the users of `room`.
fn query(actors: &tokio::runtime::Runtime, presence: &Presence, room: &RoomName) -> Vec<UserId> {
    actors.block_on(presence.room_users(room.clone())).expect("the presence registry answers")
}

fn join_leave(c: &mut Criterion, actors: &tokio::runtime::Runtime, presence: &Presence) {
    let room: RoomName = "bench:presence:churn".into();
    let users = users("user", BATCH);
    let mut group = c.benchmark_group("presence");
    group.throughput(Throughput::Elements(2 * BATCH));
    group.bench_function(BenchmarkId::new("join_leave", BATCH), |b| {
        b.iter(|| {
            for user in &users {
                presence.room_joined(room.clone(), user.clone());
            }
            for user in &users {
                presence.room_left(room.clone(), user.clone());
            }
            assert!(query(actors, presence, &room).is_empty(), "every user left");
        })
    });
    group.finish();
}

fn online_offline(c: &mut Criterion, actors: &tokio::runtime::Runtime, presence: &Presence) {
    // Presence only holds on to the outboxes here: nothing sends `direct` frames.
    let (outbox, _) = testing::collector(0);
    let members: Vec<Member> = users("conn", BATCH)
        .into_iter()
        .zip(0..)
        .map(|(user, conn)| Member {
            conn: ConnId(conn),
            user,
            outbox: outbox.clone(),
        })
        .collect();
    let room: RoomName = "bench:presence:none".into();
    let mut group = c.benchmark_group("presence");
    group.throughput(Throughput::Elements(2 * BATCH));
    group.bench_function(BenchmarkId::new("online_offline", BATCH), |b| {
        b.iter(|| {
            for member in &members {
                presence.online(member.clone());
            }
            for member in &members {
                presence.offline(member.user.clone(), member.conn);
            }
            query(actors, presence, &room);
        })
    });
    group.finish();
}

fn room_users(c: &mut Criterion, actors: &tokio::runtime::Runtime, presence: &Presence) {
    let mut group = c.benchmark_group("presence/room_users");
    for size in ROOM_SIZES {
        let room: RoomName = format!("bench:presence:{size}").into();
        for user in users("member", size) {
            presence.room_joined(room.clone(), user);
        }
        assert_eq!(query(actors, presence, &room).len() as u64, size, "the room is full");
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::from_parameter(size), |b| b.iter(|| query(actors, presence, &room)));
    }
    group.finish();
}

fn room_list(c: &mut Criterion, actors: &tokio::runtime::Runtime, rooms: &RoomRegistry) {
    let mut group = c.benchmark_group("presence/room_list");
    for size in ROOM_SIZES {
        let room: RoomName = format!("bench:rooms:{size}").into();
        for (conn, user) in users("member", size).into_iter().enumerate() {
            let member = Member { conn: ConnId(conn as u64), user, outbox: testing::deaf() };
            actors.block_on(rooms.join(room.clone(), member, None, None)).expect("the room takes the member");
        }
        let list = actors.block_on(rooms.presence(room.clone())).expect("the room is alive");
        assert_eq!(list.len() as u64, size, "the room is full");
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| actors.block_on(rooms.presence(room.clone())).expect("the room answers"))
        });
    }
    group.finish();
}

fn presence(c: &mut Criterion) {
    let (actors, tree) = support::start_tree();
    join_leave(c, &actors, &tree.presence);
    online_offline(c, &actors, &tree.presence);
    room_users(c, &actors, &tree.presence);
    room_list(c, &actors, &tree.rooms);
}

/// Few samples: an update iteration is 2,000 messages to the registry, about
/// a millisecond. Flags such as `--measurement-time` still override these.
fn short() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short();
    targets = presence
}
criterion_main!(benches);
