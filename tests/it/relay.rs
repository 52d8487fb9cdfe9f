//! One conformance suite for both relays: the in-memory one nodes share in a
//! process, and the Redis one against a real `redis-server`. Each case runs
//! with two nodes, `a` and `b`.

use crate::support::*;

use std::sync::Arc;
use std::time::Duration;

use herald::cluster::backplane::Backplane;
use herald::cluster::codec::{Body, Envelope};
use herald::cluster::relay::{Channel, Incoming, Keep, MemoryHub, MemoryRelay, RedisRelay, Relay};

/// What the numbered publishes here keep of their history.
const KEEP: Keep = Keep { size: 10, ttl_ms: 60_000 };
use tokio::sync::broadcast;

fn envelope(origin: &str, n: u64) -> Envelope {
    Envelope { origin: origin.into(), sent_us: n, body: Body::Broadcast { frame: format!("{{\"n\":{n}}}") } }
}

async fn next(rx: &mut broadcast::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an envelope in time").expect("incoming stream")
}

async fn nothing(rx: &mut broadcast::Receiver<Incoming>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("expected nothing, got {got:?}");
    }
}

/// Publishes until a subscription is live: Redis subscribes asynchronously
/// to publishes from another connection.
async fn settle<R: Relay>(a: &R, rx: &mut broadcast::Receiver<Incoming>, channel: &Channel) {
    for _ in 0..100 {
        a.publish(channel, &envelope("probe", 0)).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {}
            return;
        }
    }
    panic!("subscription to {channel:?} never became live");
}

async fn conformance<R: Relay>(a: R, b: R) {
    assert!(a.is_connected() && b.is_connected());
    let lobby = Channel::Room("lobby".into());
    let mut rx = b.incoming();

    // Only subscribed channels arrive, in order, byte for byte.
    b.subscribe(&lobby).await.unwrap();
    settle(&a, &mut rx, &lobby).await;
    for n in 1..=100 {
        a.publish(&lobby, &envelope("a", n)).await.unwrap();
    }
    for n in 1..=100 {
        let got = next(&mut rx).await;
        assert_eq!(got, Incoming { channel: "herald:room:lobby".into(), seq: None, envelope: envelope("a", n) });
    }
    a.publish(&Channel::Room("elsewhere".into()), &envelope("a", 0)).await.unwrap();
    nothing(&mut rx).await;

    // User and broadcast channels work alike, and each keeps its name.
    let alice = Channel::User("alice".into());
    b.subscribe(&alice).await.unwrap();
    b.subscribe(&Channel::Broadcast).await.unwrap();
    settle(&a, &mut rx, &alice).await;
    settle(&a, &mut rx, &Channel::Broadcast).await;
    a.publish(&alice, &envelope("a", 7)).await.unwrap();
    assert_eq!(next(&mut rx).await.channel, "herald:user:alice");
    a.publish(&Channel::Broadcast, &envelope("a", 8)).await.unwrap();
    assert_eq!(next(&mut rx).await.channel, "herald:broadcast");

    // A node subscribed to a channel gets its own envelopes back: receivers
    // drop echoes by origin.
    b.publish(&lobby, &envelope("b", 9)).await.unwrap();
    assert_eq!(next(&mut rx).await.envelope.origin, "b");

    // Numbered publishes from both nodes at once: every subscriber sees one
    // number per envelope, strictly increasing, none skipped.
    let chat = Channel::Room("chat".into());
    let mut rx_a = a.incoming();
    a.subscribe(&chat).await.unwrap();
    b.subscribe(&chat).await.unwrap();
    settle(&a, &mut rx, &chat).await;
    settle(&b, &mut rx_a, &chat).await;
    let (from_a, from_b) = tokio::join!(
        async {
            let mut seqs = Vec::new();
            for n in 0..50 {
                seqs.push(a.publish_sequenced(&chat, &envelope("a", n), 0, KEEP).await.unwrap());
            }
            seqs
        },
        async {
            let mut seqs = Vec::new();
            for n in 0..50 {
                seqs.push(b.publish_sequenced(&chat, &envelope("b", n), 0, KEEP).await.unwrap());
            }
            seqs
        },
    );
    let mut given: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    given.sort_unstable();
    assert_eq!(given, (1..=100).collect::<Vec<u64>>(), "one number each, from 1");
    for receiver in [&mut rx, &mut rx_a] {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let got = next(receiver).await;
            if got.channel == "herald:room:chat" && got.envelope.origin != "probe" {
                let seq = got.seq.expect("numbered");
                let n = got.envelope.sent_us as usize;
                let expected = if got.envelope.origin == "a" { from_a[n] } else { from_b[n] };
                assert_eq!(seq, expected, "the number the publisher was given");
                seen.push(seq);
            }
        }
        assert_eq!(seen, (1..=100).collect::<Vec<u64>>(), "in order on every node");
    }

    // A floor keeps numbers above what a node has seen, even when the
    // counter is behind (Redis lost it); raising a counter never lowers it.
    let floored = Channel::Room("floored".into());
    assert_eq!(a.publish_sequenced(&floored, &envelope("a", 0), 0, KEEP).await.unwrap(), 1);
    assert_eq!(a.publish_sequenced(&floored, &envelope("a", 0), 10, KEEP).await.unwrap(), 11);
    a.raise_counter(&floored, 20, false).await.unwrap();
    assert_eq!(b.publish_sequenced(&floored, &envelope("b", 0), 0, KEEP).await.unwrap(), 21);
    a.raise_counter(&floored, 5, false).await.unwrap();
    assert_eq!(b.publish_sequenced(&floored, &envelope("b", 0), 0, KEEP).await.unwrap(), 22);
    // Calls take effect in the order made, even when awaited only later.
    let calls: Vec<_> = (0..20).map(|n| a.publish_sequenced(&floored, &envelope("a", n), 0, KEEP)).collect();
    let mut numbers = Vec::new();
    for call in calls {
        numbers.push(call.await.unwrap());
    }
    assert_eq!(numbers, (23..43).collect::<Vec<u64>>());

    // History: the same script keeps the latest `size` numbered envelopes,
    // and names the numbering with an epoch every node reads alike.
    let held = a.history(&floored, 0, 100).await.unwrap();
    assert_eq!(held.latest, 42);
    assert!(!held.epoch.is_empty());
    assert_eq!(held.entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (33..=42).collect::<Vec<u64>>());
    assert_eq!(held.entries[9].1, envelope("a", 19), "the envelope as published");
    let after = b.history(&floored, 40, 100).await.unwrap();
    assert_eq!((after.epoch.as_str(), after.latest), (held.epoch.as_str(), 42));
    assert_eq!(after.entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [41, 42]);
    assert_eq!(b.history(&floored, 30, 3).await.unwrap().entries.len(), 3, "limit");
    assert!(b.history(&floored, 0, 0).await.unwrap().entries.is_empty(), "no entries asked");
    let far = b.history(&floored, u64::MAX - 1, 10).await.unwrap();
    assert_eq!((far.latest, far.entries.len()), (42, 0), "after any number, even past 2^53");
    assert_eq!(b.history(&floored, 1 << 60, 10).await.unwrap().entries.len(), 0);
    // Raising the counter past what it gave, or saying numbers were given
    // outside it, starts a new epoch; raising it to where it is does not.
    let epoch = |r: &R, c: &Channel| {
        let read = r.history(c, 0, 0);
        async move { read.await.unwrap().epoch }
    };
    let before = epoch(&a, &floored).await;
    a.raise_counter(&floored, 42, false).await.unwrap();
    assert_eq!(epoch(&b, &floored).await, before, "nothing given outside the counter");
    a.raise_counter(&floored, 42, true).await.unwrap();
    let renewed = epoch(&b, &floored).await;
    assert_ne!(renewed, before, "a node numbered on its own");
    a.raise_counter(&floored, 50, false).await.unwrap();
    let raised = epoch(&b, &floored).await;
    assert_ne!(raised, renewed, "the counter was behind");
    assert_eq!(b.publish_sequenced(&floored, &envelope("b", 0), 0, KEEP).await.unwrap(), 51);
    assert_eq!(epoch(&a, &floored).await, raised, "numbering on from there, in that epoch");
    assert_eq!(b.publish_sequenced(&floored, &envelope("b", 0), 60, KEEP).await.unwrap(), 61);
    assert_ne!(epoch(&a, &floored).await, raised, "a floor above the counter");

    // A channel never published to has an epoch too, which stays.
    let quiet = Channel::Room("quiet".into());
    let first = a.history(&quiet, 0, 10).await.unwrap();
    assert_eq!((first.latest, first.entries.len()), (0, 0));
    assert_eq!(b.history(&quiet, 0, 10).await.unwrap().epoch, first.epoch);
    // Without size, nothing is kept; after its TTL, the history is gone
    // but the numbering goes on.
    let none = Channel::Room("unkept".into());
    a.publish_sequenced(&none, &envelope("a", 0), 0, Keep { size: 0, ttl_ms: 1 }).await.unwrap();
    assert!(a.history(&none, 0, 10).await.unwrap().entries.is_empty());
    let brief = Channel::Room("brief".into());
    a.publish_sequenced(&brief, &envelope("a", 0), 0, Keep { size: 10, ttl_ms: 200 }).await.unwrap();
    assert_eq!(a.history(&brief, 0, 10).await.unwrap().entries.len(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = a.history(&brief, 0, 10).await.unwrap();
    assert_eq!((expired.latest, expired.entries.len()), (1, 0));

    // Unsubscribed: nothing more. A node's subscription changes take effect
    // in order, so once a channel it subscribes to afterwards is live, the
    // unsubscribe has taken effect.
    b.unsubscribe(&lobby).await.unwrap();
    let later = Channel::Room("later".into());
    b.subscribe(&later).await.unwrap();
    settle(&a, &mut rx, &later).await;
    a.publish(&lobby, &envelope("a", 10)).await.unwrap();
    nothing(&mut rx).await;
}

#[tokio::test]
async fn the_memory_relay_conforms() {
    let hub = Arc::new(MemoryHub::default());
    conformance(MemoryRelay::new(hub.clone()), MemoryRelay::new(hub)).await;
}

#[tokio::test]
async fn the_redis_relay_conforms() {
    let redis = RedisServer::start();
    let node = || async { RedisRelay::new(Arc::new(Backplane::connect(&redis.url(), WAIT).await.unwrap())) };
    conformance(node().await, node().await).await;
}

#[tokio::test]
async fn memory_relays_on_another_hub_hear_nothing() {
    let (a, b) = (MemoryRelay::new(Arc::new(MemoryHub::default())), MemoryRelay::new(Arc::new(MemoryHub::default())));
    let mut rx = b.incoming();
    b.subscribe(&Channel::Broadcast).await.unwrap();
    a.publish(&Channel::Broadcast, &envelope("a", 1)).await.unwrap();
    nothing(&mut rx).await;
}
