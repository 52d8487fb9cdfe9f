//! [`Relay`]: how envelopes travel between nodes, behind one trait with two
//! implementations that behave alike (one conformance suite runs against
//! both, `tests/it/relay.rs`):
//!
//! - [`MemoryRelay`]: nodes in one process joined by a [`MemoryHub`]; the
//!   embedded default and the reference the Redis relay is held to.
//! - [`RedisRelay`]: Redis pub/sub through the [`Backplane`].
//!
//! Delivery is at most once and in order per channel and sender. A relay
//! delivers a node's own envelopes back to it when it is subscribed to the
//! channel, as Redis does: receivers drop echoes by [`Envelope::origin`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use futures_util::TryFutureExt;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::backplane::{Backplane, BackplaneError};
use super::codec::{self, Envelope};
use crate::ids::{RoomName, UserId};

/// Envelopes a node buffers for a slow reader before it lags.
const INCOMING_CAPACITY: usize = 16 * 1024;

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The members of a room, on nodes that have some.
    Room(RoomName),
    /// The connections of a user, on nodes that have some.
    User(UserId),
    /// Every node.
    Broadcast,
}

impl Channel {
    /// The key of its counter for [`Relay::publish_sequenced`].
    pub fn counter(&self) -> String {
        format!("herald:seq:{}", &self.name()["herald:".len()..])
    }

    /// The key of its history (a stream of its numbered envelopes).
    pub fn history(&self) -> String {
        format!("herald:history:{}", &self.name()["herald:".len()..])
    }

    /// The key of its epoch: names one unbroken numbering of its counter.
    pub fn epoch(&self) -> String {
        format!("herald:epoch:{}", &self.name()["herald:".len()..])
    }

    /// Its name on the backplane.
    pub fn name(&self) -> String {
        match self {
            Self::Room(room) => format!("herald:room:{room}"),
            Self::User(user) => format!("herald:user:{user}"),
            Self::Broadcast => "herald:broadcast".to_owned(),
        }
    }
}

/// An envelope that arrived, with the channel it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub channel: String,
    /// Its number, when it was published with [`Relay::publish_sequenced`].
    pub seq: Option<u64>,
    pub envelope: Envelope,
}

/// What a channel's history keeps of its numbered envelopes: the latest
/// `size` (none when 0), until `ttl_ms` after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub size: usize,
    pub ttl_ms: u64,
}

/// A channel's numbering as the backplane holds it, and part of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Names the unbroken numbering the counter is in: it changes when the
    /// counter was lost (Redis restarted without its data).
    pub epoch: String,
    /// The last number given out (0 before the first).
    pub latest: u64,
    /// Numbered envelopes from the history, in order.
    pub entries: Vec<(u64, Envelope)>,
}

/// Why a relay operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// Never sent: certainly without effect.
    #[error("the backplane is unreachable: {0}")]
    Unreachable(String),
    /// Sent, but no answer came: it may or may not have taken effect.
    #[error("no answer from the backplane: {0}")]
    Unanswered(String),
}

impl RelayError {
    /// A backplane error, told apart by whether Redis ran the command.
    pub fn from_backplane(error: BackplaneError) -> Self {
        match error {
            BackplaneError::NotRun(_) => Self::Unreachable(error.to_string()),
            BackplaneError::Unknown(_) => Self::Unanswered(error.to_string()),
        }
    }
}

/// The answer to a relay call. The call itself has already taken its place
/// in line when it returns; awaiting this only waits for the outcome.
pub(crate) type Pending<T> = BoxFuture<'static, Result<T, RelayError>>;

/// How envelopes travel between nodes.
///
/// Calls take effect in the order they are made, whether or not their
/// answers are awaited in between: a room may publish twice and await both
/// later, and the first is numbered first.
pub trait Relay: Send + Sync + 'static {
    /// Sends `envelope` to every node subscribed to `channel`.
    fn publish(&self, channel: &Channel, envelope: &Envelope) -> Pending<()>;
    /// Numbers `envelope` with the next value of `channel`'s counter (and
    /// above `floor`, the last number this node knows of), adds it to the
    /// channel's history as `keep` says, and publishes it, in one step:
    /// every subscriber sees the numbers of a channel strictly increasing,
    /// whichever node published, and the history never disagrees with the
    /// counter. Returns the number.
    fn publish_sequenced(&self, channel: &Channel, envelope: &Envelope, floor: u64, keep: Keep) -> Pending<u64>;
    /// The channel's epoch (made now if it has none) and latest number, and
    /// up to `limit` envelopes of its history numbered above `after`.
    fn history(&self, channel: &Channel, after: u64, limit: usize) -> Pending<Recorded>;
    /// Raises `channel`'s counter to at least `floor`, so numbering never
    /// goes back below what a node has seen (after Redis lost its data).
    /// With `renew`, or when the counter was below `floor`, the channel's
    /// numbering is not one unbroken sequence any more: it gets a new epoch.
    fn raise_counter(&self, channel: &Channel, floor: u64, renew: bool) -> Pending<()>;
    /// Receives `channel` from now on (again after any reconnect).
    fn subscribe(&self, channel: &Channel) -> Pending<()>;
    /// Stops receiving `channel`.
    fn unsubscribe(&self, channel: &Channel) -> Pending<()>;
    /// Drops every subscription whose channel name `keep` refuses.
    fn retain_subscriptions(&self, keep: &dyn Fn(&str) -> bool) -> Pending<()>;
    /// Everything that arrives on the subscribed channels.
    fn incoming(&self) -> broadcast::Receiver<Incoming>;
    /// Whether envelopes can travel now.
    fn is_connected(&self) -> bool;
    /// Moves every time the link to the backplane is (re-)established:
    /// envelopes in flight across that moment may have been lost.
    fn epoch(&self) -> u64;
}

/// Joins the [`MemoryRelay`]s of one process, as Redis joins nodes.
#[derive(Default)]
pub struct MemoryHub {
    channels: Mutex<HashMap<String, Vec<Weak<MemoryNode>>>>,
    counters: Mutex<HashMap<String, u64>>,
    /// Each channel's history and epoch, by the channel's counter key.
    streams: Mutex<HashMap<String, MemoryStream>>,
}

/// A channel's history in a [`MemoryHub`].
#[derive(Default)]
struct MemoryStream {
    epoch: String,
    entries: std::collections::VecDeque<(u64, Envelope)>,
    expires: Option<std::time::Instant>,
}

impl MemoryStream {
    fn held(&mut self) -> &mut std::collections::VecDeque<(u64, Envelope)> {
        if self.expires.is_some_and(|at| at <= std::time::Instant::now()) {
            self.entries.clear();
            self.expires = None;
        }
        &mut self.entries
    }
}

impl MemoryHub {
    /// Delivers to every node subscribed to `name`. With `counter`, numbers
    /// the envelope under the channel lock, so numbers go out in order, and
    /// keeps it in the channel's history.
    fn deliver(&self, name: String, envelope: Envelope, counter: Option<(String, u64, Keep)>) -> Option<u64> {
        let mut channels = self.channels.lock();
        let seq = counter.map(|(key, floor, keep)| {
            let mut counters = self.counters.lock();
            let next = counters.entry(key.clone()).or_insert(0);
            let skipped = *next < floor;
            *next = (*next + 1).max(floor + 1);
            let seq = *next;
            let mut streams = self.streams.lock();
            let stream = streams.entry(key).or_default();
            if stream.epoch.is_empty() || skipped {
                stream.epoch = crate::ids::random_token();
            }
            if keep.size > 0 {
                let held = stream.held();
                held.push_back((seq, envelope.clone()));
                while held.len() > keep.size {
                    held.pop_front();
                }
                stream.expires = Some(std::time::Instant::now() + std::time::Duration::from_millis(keep.ttl_ms));
            }
            seq
        });
        if let Some(nodes) = channels.get_mut(&name) {
            nodes.retain(|n| n.strong_count() > 0);
            for node in nodes.iter().filter_map(Weak::upgrade) {
                let _ = node.tx.send(Incoming { channel: name.clone(), seq, envelope: envelope.clone() });
            }
        }
        seq
    }
}

struct MemoryNode {
    tx: broadcast::Sender<Incoming>,
    subscribed: Mutex<HashSet<String>>,
}

/// `envelope` encoded and decoded, as it crosses Redis, so both relays
/// carry exactly what the codec carries.
fn through_codec(envelope: &Envelope) -> Envelope {
    codec::decode(&codec::encode(envelope)).expect("an encoded envelope decodes")
}

/// A node's relay through a [`MemoryHub`].
pub struct MemoryRelay {
    hub: Arc<MemoryHub>,
    node: Arc<MemoryNode>,
}

impl MemoryRelay {
    pub fn new(hub: Arc<MemoryHub>) -> Self {
        let (tx, _) = broadcast::channel(INCOMING_CAPACITY);
        Self { hub, node: Arc::new(MemoryNode { tx, subscribed: Mutex::default() }) }
    }
}

impl Relay for MemoryRelay {
    fn publish(&self, channel: &Channel, envelope: &Envelope) -> Pending<()> {
        self.hub.deliver(channel.name(), through_codec(envelope), None);
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish_sequenced(&self, channel: &Channel, envelope: &Envelope, floor: u64, keep: Keep) -> Pending<u64> {
        let seq = self.hub.deliver(channel.name(), through_codec(envelope), Some((channel.counter(), floor, keep)));
        Box::pin(std::future::ready(Ok(seq.expect("a counter was given"))))
    }

    fn history(&self, channel: &Channel, after: u64, limit: usize) -> Pending<Recorded> {
        let key = channel.counter();
        let latest = self.hub.counters.lock().get(&key).copied().unwrap_or(0);
        let mut streams = self.hub.streams.lock();
        let stream = streams.entry(key).or_default();
        if stream.epoch.is_empty() {
            stream.epoch = crate::ids::random_token();
        }
        let entries = stream.held().iter().filter(|(seq, _)| *seq > after).take(limit).cloned().collect();
        Box::pin(std::future::ready(Ok(Recorded { epoch: stream.epoch.clone(), latest, entries })))
    }

    fn raise_counter(&self, channel: &Channel, floor: u64, renew: bool) -> Pending<()> {
        let mut counters = self.hub.counters.lock();
        let now = counters.entry(channel.counter()).or_insert(0);
        let renew = renew || *now < floor;
        *now = (*now).max(floor);
        if renew {
            self.hub.streams.lock().entry(channel.counter()).or_default().epoch = crate::ids::random_token();
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe(&self, channel: &Channel) -> Pending<()> {
        let name = channel.name();
        if self.node.subscribed.lock().insert(name.clone()) {
            self.hub.channels.lock().entry(name).or_default().push(Arc::downgrade(&self.node));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn unsubscribe(&self, channel: &Channel) -> Pending<()> {
        let name = channel.name();
        if self.node.subscribed.lock().remove(&name) {
            if let Some(nodes) = self.hub.channels.lock().get_mut(&name) {
                nodes.retain(|n| !std::ptr::eq(n.as_ptr(), Arc::as_ptr(&self.node)));
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn retain_subscriptions(&self, keep: &dyn Fn(&str) -> bool) -> Pending<()> {
        let dropped: Vec<String> = {
            let mut subscribed = self.node.subscribed.lock();
            let dropped = subscribed.iter().filter(|name| !keep(name)).cloned().collect();
            subscribed.retain(|name| keep(name));
            dropped
        };
        let mut channels = self.hub.channels.lock();
        for name in dropped {
            if let Some(nodes) = channels.get_mut(&name) {
                nodes.retain(|n| !std::ptr::eq(n.as_ptr(), Arc::as_ptr(&self.node)));
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn incoming(&self) -> broadcast::Receiver<Incoming> {
        self.node.tx.subscribe()
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn epoch(&self) -> u64 {
        0
    }
}

/// A node's relay through Redis pub/sub.
pub struct RedisRelay {
    backplane: Arc<Backplane>,
    tx: broadcast::Sender<Incoming>,
    reader: tokio::task::JoinHandle<()>,
}

impl RedisRelay {
    /// Relays through `backplane`; must run on a tokio runtime, which the
    /// relay's reader task lives on.
    pub fn new(backplane: Arc<Backplane>) -> Self {
        let (tx, _) = broadcast::channel(INCOMING_CAPACITY);
        let mut messages = backplane.messages();
        let sink = tx.clone();
        let reader = tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(message) => message,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "relay reader fell behind the backplane; envelopes lost");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(payload) = message.value.as_bytes() else { continue };
                match codec::decode_incoming(payload) {
                    Ok((seq, envelope)) => {
                        let _ = sink.send(Incoming { channel: message.channel.to_string(), seq, envelope });
                    }
                    Err(error) => {
                        tracing::warn!(channel = %message.channel, %error, "dropped an unreadable envelope")
                    }
                }
            }
        });
        Self { backplane, tx, reader }
    }
}

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn unreachable(error: BackplaneError) -> RelayError {
    RelayError::from_backplane(error)
}

impl Relay for RedisRelay {
    fn publish(&self, channel: &Channel, envelope: &Envelope) -> Pending<()> {
        Box::pin(self.backplane.publish(channel.name(), codec::encode(envelope)).map_ok(drop).map_err(unreachable))
    }

    fn publish_sequenced(&self, channel: &Channel, envelope: &Envelope, floor: u64, keep: Keep) -> Pending<u64> {
        let keys = [channel.counter(), channel.name(), channel.history(), channel.epoch()];
        let publish = self.backplane.sequenced_publish(keys, codec::encode(envelope), floor, keep);
        Box::pin(publish.map_err(unreachable))
    }

    fn history(&self, channel: &Channel, after: u64, limit: usize) -> Pending<Recorded> {
        let keys = [channel.counter(), channel.history(), channel.epoch()];
        let read = self.backplane.history(keys, after, limit);
        Box::pin(async move {
            let (epoch, latest, raw) = read.await.map_err(unreachable)?;
            let mut entries = Vec::with_capacity(raw.len());
            for (seq, payload) in raw {
                match codec::decode(&payload) {
                    Ok(envelope) => entries.push((seq, envelope)),
                    // A hole: the replay will not claim to be whole.
                    Err(error) => tracing::warn!(seq, %error, "dropped an unreadable envelope from a room's history"),
                }
            }
            Ok(Recorded { epoch, latest, entries })
        })
    }

    fn raise_counter(&self, channel: &Channel, floor: u64, renew: bool) -> Pending<()> {
        let keys = [channel.counter(), channel.epoch()];
        Box::pin(self.backplane.raise_counter(keys, floor, renew).map_err(unreachable))
    }

    fn subscribe(&self, channel: &Channel) -> Pending<()> {
        Box::pin(self.backplane.subscribe(channel.name()).map_err(unreachable))
    }

    fn unsubscribe(&self, channel: &Channel) -> Pending<()> {
        Box::pin(self.backplane.unsubscribe(channel.name()).map_err(unreachable))
    }

    fn retain_subscriptions(&self, keep: &dyn Fn(&str) -> bool) -> Pending<()> {
        let calls: Vec<_> = self
            .backplane
            .subscriptions()
            .into_iter()
            .filter(|name| !keep(name))
            .map(|name| self.backplane.unsubscribe(name))
            .collect();
        Box::pin(async move {
            for call in calls {
                call.await.map_err(unreachable)?;
            }
            Ok(())
        })
    }

    fn incoming(&self) -> broadcast::Receiver<Incoming> {
        self.tx.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.backplane.is_connected()
    }

    fn epoch(&self) -> u64 {
        self.backplane.epoch()
    }
}
