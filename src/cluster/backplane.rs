//! The Redis connection a node relays through: one client that publishes
//! (and runs commands) and one that subscribes, both reconnecting on their
//! own with backoff, however long Redis is away. The subscriber's channels
//! are managed: after every reconnect it subscribes to all of them again.
//!
//! Messages published while Redis is away are lost (pub/sub keeps nothing);
//! whoever depends on the backplane must re-sync what it needs when
//! [`Backplane::is_connected`] turns true again.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use tokio::sync::broadcast;

/// The longest a connection attempt or a command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages the subscriber buffers for a slow reader before it lags.
const BROADCAST_CAPACITY: usize = 16 * 1024;

/// Numbers a payload and publishes it in one step (Redis runs scripts one
/// at a time): `KEYS[1]` the counter, `KEYS[2]` the channel, `ARGV[1]` the payload.
const SEQUENCED_PUBLISH: &str = "local seq = redis.call('INCR', KEYS[1]) \
    redis.call('PUBLISH', KEYS[2], seq .. ':' .. ARGV[1]) \
    return seq";

/// A node's two connections to Redis.
pub struct Backplane {
    publisher: Client,
    subscriber: SubscriberClient,
}

/// Reconnection: at once, then backing off to 1 s between attempts, forever.
fn policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 50, 1_000, 2)
}

impl Backplane {
    /// Connects to `url` (`redis://host:port/db`). Fails if Redis cannot be
    /// reached now; once connected, outages are survived.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let config = Config::from_url(url)?;
        let builder = || {
            let mut builder = Builder::from_config(config.clone());
            builder
                .set_policy(policy())
                .with_connection_config(|c| c.connection_timeout = COMMAND_TIMEOUT)
                .with_performance_config(|c| {
                    c.broadcast_channel_capacity = BROADCAST_CAPACITY;
                    c.default_command_timeout = COMMAND_TIMEOUT;
                });
            builder
        };
        let publisher = builder().build()?;
        let subscriber = builder().build_subscriber_client()?;
        publisher.init().await?;
        subscriber.init().await?;
        // Re-subscribes to every tracked channel after each reconnect.
        let _resubscribing = subscriber.manage_subscriptions();
        Ok(Self { publisher, subscriber })
    }

    /// Publishes `payload` on `channel`; returns how many subscribers got it.
    /// Fails at once while Redis is away: a relayed message is worth nothing late.
    pub async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<u64, Error> {
        if !self.publisher.is_connected() {
            return Err(Error::new(ErrorKind::IO, "redis is unreachable"));
        }
        self.publisher.publish(channel, payload).await
    }

    /// Increments the counter `keys[0]` and publishes `<number>:<payload>` on
    /// the channel `keys[1]`, atomically in Redis: subscribers see numbers
    /// in order. Returns the number.
    pub async fn sequenced_publish(&self, keys: Vec<String>, payload: Vec<u8>) -> Result<u64, Error> {
        if !self.publisher.is_connected() {
            return Err(Error::new(ErrorKind::IO, "redis is unreachable"));
        }
        self.publisher.eval(SEQUENCED_PUBLISH, keys, payload).await
    }

    /// Subscribes to `channel`, now and after every reconnect.
    pub async fn subscribe(&self, channel: &str) -> Result<(), Error> {
        self.subscriber.subscribe(channel).await
    }

    /// Stops receiving `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        self.subscriber.unsubscribe(channel).await
    }

    /// Every message on the subscribed channels, in the order received. A
    /// reader that falls more than the buffer behind gets `Lagged`.
    pub fn messages(&self) -> broadcast::Receiver<Message> {
        self.subscriber.message_rx()
    }

    /// Whether both connections are up now.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    /// The publishing client, for commands other than pub/sub.
    pub fn client(&self) -> &Client {
        &self.publisher
    }

    /// Closes both connections.
    pub async fn quit(&self) {
        let _ = self.subscriber.quit().await;
        let _ = self.publisher.quit().await;
    }
}
