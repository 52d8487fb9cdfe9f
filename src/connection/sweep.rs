//! Heartbeats and authentication deadlines for every connection of a node,
//! from one periodic sweep instead of a timer per connection.
//!
//! Each tick walks the open connections once. A connection whose heartbeat
//! is due gets its ping written from here, through its outbox (usually one
//! `send`, no wake-up of the connection); one silent for longer than
//! `heartbeat.timeout_ms`, or still unauthenticated past `auth.timeout_ms`,
//! is asked to close. The tick is a tenth of the shortest of those times
//! (the authentication one only while `auth.required`), between 5 ms and
//! 1 s, so a deadline is kept to within that.

use std::sync::Arc;
use std::time::Duration;

use super::{clock, Delivery};
use crate::metrics::Fault;
use crate::node::Node;
use crate::protocol::close;

/// How often the sweep runs for `node`'s configuration.
pub fn tick(node: &Node) -> Duration {
    let config = &node.config;
    let mut shortest = config.heartbeat.interval_ms.min(config.heartbeat.timeout_ms);
    if config.auth.required {
        shortest = shortest.min(config.auth.timeout_ms);
    }
    Duration::from_millis((shortest / 10).clamp(5, 1000))
}

/// Sweeps `node`'s connections every [`tick`], forever.
pub async fn run(node: Arc<Node>) {
    let mut interval = tokio::time::interval(tick(&node));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        sweep(&node);
        crate::memory::settle();
    }
}

/// One pass over every open connection.
pub fn sweep(node: &Node) {
    let now = clock::now();
    let heartbeat = &node.config.heartbeat;
    node.connections.for_each(|outbox| {
        let (next_ping, auth_deadline) = outbox.deadlines();
        if auth_deadline.is_some_and(|at| clock::reached(now, at)) {
            outbox.set_auth_deadline(None);
            outbox.close(close::AUTH_TIMEOUT);
            return;
        }
        // A connection with no heartbeat due is closing.
        let Some(next_ping) = next_ping else { return };
        let transport = outbox.transport();
        if transport.is_duplex() && clock::since(now, outbox.heard_ms()) >= heartbeat.timeout_ms {
            outbox.set_next_ping(None);
            node.metrics.connection_dropped(Fault::Heartbeat);
            outbox.close(close::NORMAL);
            return;
        }
        if clock::reached(now, next_ping) {
            outbox.set_next_ping(Some(clock::after(now, heartbeat.interval_ms)));
            if outbox.write(transport.ping(), false) == Delivery::Full {
                outbox.slow_consumer(&node.metrics);
            }
        }
    });
}
