//! Clustering end to end: a real `redis-server` on a free port and two or
//! three real `herald` processes relaying through it, with real WebSocket
//! clients on each node. Here the fixtures; [`relaying`] what crosses nodes
//! (rooms, acks, direct, broadcast, presence), [`failures`] nodes and Redis
//! going away, subscriptions, metrics and supervision.

mod failures;
mod namespaces;
mod recovery;
mod relaying;

use crate::support::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const API_KEY: &str = "cluster-test-key";
/// The heartbeat ttl the nodes run with: short, so dead nodes go quickly.
const TTL_MS: u64 = 2000;

/// A `herald` process in a cluster.
struct Node {
    herald: Herald,
    addr: std::net::SocketAddr,
}

impl Node {
    /// Starts node `id` relaying through `redis_url` (or not, when
    /// `cluster` is false); returns once it answers `/healthz` and, in a
    /// cluster, `/readyz`.
    async fn start(id: &str, redis_url: String, cluster: bool) -> Self {
        Self::start_with(id, redis_url, cluster, "").await
    }

    /// [`Self::start`], with `extra` appended to the config file.
    async fn start_with(id: &str, redis_url: String, cluster: bool, extra: &str) -> Self {
        let toml = format!(
            "[server]\nnode_id = \"{id}\"\nworkers = 1\n\
             [auth]\njwt_secret = \"{SECRET}\"\n\
             [limits]\nrate_per_sec = 100000\nrate_burst = 100000\n\
             [api]\nkey = \"{API_KEY}\"\n\
             [cluster]\nenabled = {cluster}\nredis_url = \"{redis_url}\"\nnode_ttl_ms = {TTL_MS}\n{extra}"
        );
        let ready = if cluster { "/readyz" } else { "/healthz" };
        let herald = HeraldCommand::new().config(&toml).ready_at(ready).start().await;
        Node { addr: herald.addr, herald }
    }

    async fn client(&self, user: &str) -> Client {
        ws_connect_as(&self.herald, user).await
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        api(self.addr, method, path, Some(API_KEY), &body.to_string()).await
    }

    async fn metrics(&self) -> Snapshot {
        Snapshot::take(&self.herald).await
    }

    /// SIGKILL: no goodbye to the cluster.
    fn kill(&mut self) {
        self.herald.kill();
    }
}

/// Joins `room` with each client in turn.
async fn join_everywhere(clients: &mut [&mut Client], room: &str) {
    for client in clients.iter_mut() {
        client.join(room).await;
    }
}

/// The next `message` frame in `room`, skipping everything else.
async fn next_message(client: &mut Client, room: &str) -> Value {
    loop {
        let frame = client.recv_type("message").await;
        if frame["room"] == room {
            return frame;
        }
    }
}

/// Reads `n` messages of `room`, asserting `seq` strictly increases.
async fn messages(client: &mut Client, room: &str, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::with_capacity(n);
    while got.len() < n {
        let message = next_message(client, room).await;
        if let Some(last) = got.last() {
            assert!(
                message["seq"].as_u64() > last["seq"].as_u64(),
                "seq went from {} to {}",
                last["seq"],
                message["seq"]
            );
        }
        got.push(message);
    }
    got
}

/// Publishes into `room` from `client` until `receiver` has one, so the
/// nodes' subscriptions are known to be live; drains what it got.
async fn until_relayed(sender: &mut Client, receivers: &mut [&mut Client], room: &str) {
    let deadline = Instant::now() + WAIT;
    'probe: loop {
        assert!(Instant::now() < deadline, "the room never relayed");
        sender.send(json!({"type": "publish", "room": room, "data": "probe"})).await;
        for receiver in receivers.iter_mut() {
            match tokio::time::timeout(Duration::from_millis(300), next_message(receiver, room)).await {
                Ok(_) => {}
                Err(_) => continue 'probe,
            }
        }
        break;
    }
    // Whatever probes are still in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for client in std::iter::once(sender).chain(receivers.iter_mut().map(|c| &mut **c)) {
        while client.next_event_within(Duration::from_millis(50)).await.is_some() {}
    }
}

/// Publishes `count` messages into `chat` as `who`, with ids.
async fn publish_all(client: &mut Client, who: &str, count: usize) {
    for n in 0..count {
        client.send(json!({"type": "publish", "room": "chat", "data": {"who": who, "n": n}, "id": n})).await;
    }
}
