//! The Redis backplane against a real `redis-server`: publish and subscribe,
//! and subscriptions that come back by themselves after Redis restarts.

use crate::support::*;

use std::time::Duration;

use fred::prelude::PubsubInterface;
use herald::cluster::backplane::Backplane;
use herald::cluster::codec::{self, Body, Envelope};

/// The next payload on `channel`, within [`WAIT`].
async fn next_on(rx: &mut tokio::sync::broadcast::Receiver<fred::types::Message>, channel: &str) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        loop {
            let message = rx.recv().await.expect("subscriber stream");
            if &*message.channel == channel {
                return message.value.as_bytes().expect("binary payload").to_vec();
            }
        }
    })
    .await
    .expect("a message in time")
}

/// Waits until Redis counts `n` subscribers of `channel`. A subscription
/// change is answered once it is on its way to Redis, which applies it when
/// it reads it: a publish from another connection may get there first.
async fn until_subscribers(on: &Backplane, channel: &str, n: u64) {
    let counted = eventually(WAIT, || async {
        let reply: Vec<fred::types::Value> = on.client().pubsub_numsub(channel).await.unwrap_or_default();
        reply.get(1).and_then(|count| count.as_u64()) == Some(n)
    })
    .await;
    assert!(counted, "Redis never counted {n} subscriber(s) of {channel}");
}

fn envelope(n: u64) -> Envelope {
    Envelope { origin: "node-a".into(), sent_us: n, body: Body::Broadcast { frame: format!("{{\"n\":{n}}}") } }
}

#[tokio::test]
async fn envelopes_cross_between_two_nodes_connections() {
    let redis = RedisServer::start();
    let (a, b) =
        (Backplane::connect(&redis.url(), WAIT).await.unwrap(), Backplane::connect(&redis.url(), WAIT).await.unwrap());
    let mut rx = b.messages();
    b.subscribe("herald:broadcast").await.unwrap();
    until_subscribers(&a, "herald:broadcast", 1).await;
    assert_eq!(a.publish("herald:broadcast", codec::encode(&envelope(1))).await.unwrap(), 1);
    let got = codec::decode(&next_on(&mut rx, "herald:broadcast").await).unwrap();
    assert_eq!(got, envelope(1));
    // Unsubscribed: nobody receives it any more.
    b.unsubscribe("herald:broadcast").await.unwrap();
    until_subscribers(&a, "herald:broadcast", 0).await;
    assert_eq!(a.publish("herald:broadcast", codec::encode(&envelope(2))).await.unwrap(), 0);
}

#[tokio::test]
async fn subscriptions_come_back_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let publisher = Backplane::connect(&redis.url(), WAIT).await.unwrap();
    let subscriber = Backplane::connect(&redis.url(), WAIT).await.unwrap();
    let mut rx = subscriber.messages();
    subscriber.subscribe("herald:room:lobby").await.unwrap();
    assert!(subscriber.is_connected());

    redis.stop();
    assert!(
        eventually(WAIT, || async { !subscriber.is_connected() && !publisher.is_connected() }).await,
        "both see Redis go"
    );
    assert!(publisher.publish("herald:room:lobby", vec![1]).await.is_err(), "nothing is published meanwhile");

    redis.restart();
    // The subscriber re-subscribes on its own; poll until a publish reaches it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(1) = publisher.publish("herald:room:lobby", codec::encode(&envelope(3))).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the subscription never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(codec::decode(&next_on(&mut rx, "herald:room:lobby").await).unwrap(), envelope(3));
    assert!(eventually(WAIT, || async { subscriber.is_connected() && publisher.is_connected() }).await);
}
