//! The Redis connection a node relays through: one client that publishes
//! and runs commands, and one that subscribes, both reconnecting on their
//! own with backoff, however long Redis is away. The subscriber's channels
//! are managed: after every reconnect it subscribes to all of them again.
//!
//! Commands keep the order they were issued in. Each call queues its
//! command at once, before its future is awaited, on one of two ordered
//! queues: one for commands (sent by a writer task in pipelined batches:
//! everything queued while a batch is in flight goes out as the next batch)
//! and one for subscription changes (consecutive ones of a kind merged into
//! one `SUBSCRIBE` or `UNSUBSCRIBE`). So a room that publishes twice gets
//! its two messages numbered in that order, and a subscription dropped and
//! taken again ends up taken.
//!
//! A failed call says whether Redis certainly did not run it
//! ([`BackplaneError::NotRun`]) or may have ([`BackplaneError::Unknown`]).
//!
//! While Redis is away every call fails at once (a relayed message is worth
//! nothing late), and messages published meanwhile are lost (pub/sub keeps
//! nothing): whoever depends on the backplane re-syncs what it needs when
//! [`Backplane::is_connected`] turns true again.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;
use fred::types::{ClusterHash, CustomCommand, Message};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::relay::Keep;
use super::script::{self, Script};

/// The longest a connection attempt or a command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages the subscriber buffers for a slow reader before it lags.
const BROADCAST_CAPACITY: usize = 16 * 1024;

/// Commands waiting for the writer before calls fail as overloaded.
const QUEUE_CAPACITY: usize = 64 * 1024;

/// Most commands in one pipelined batch.
const MAX_BATCH: usize = 512;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// Redis did not run it: certainly without effect.
    #[error("{0}")]
    NotRun(NotRun),
    /// Sent, and no usable answer came: Redis may have run it.
    #[error("{0}")]
    Unknown(Error),
}

/// Why Redis did not run a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotRun {
    #[error("redis is unreachable")]
    Unreachable,
    #[error("the backplane is overloaded")]
    Overloaded,
    #[error("the backplane stopped")]
    Stopped,
    /// Redis had lost the script (its cache was flushed); the next batch loads it again.
    #[error("redis did not have the script")]
    NoScript,
}

impl From<Error> for BackplaneError {
    fn from(error: Error) -> Self {
        Self::Unknown(error)
    }
}

impl BackplaneError {
    /// Whether Redis certainly did not run the call.
    pub fn not_run(&self) -> bool {
        matches!(self, Self::NotRun(_))
    }
}

/// A command for the writer.
enum Command {
    Publish { channel: String, payload: Vec<u8> },
    Eval { script: &'static Script, keys: Vec<String>, args: Vec<Value> },
}

struct Op {
    command: Command,
    reply: oneshot::Sender<Result<Value, BackplaneError>>,
}

/// A subscription change.
struct SubOp {
    subscribe: bool,
    channel: String,
    reply: oneshot::Sender<Result<(), BackplaneError>>,
}

/// A node's two connections to Redis, and the tasks that feed them in order.
pub struct Backplane {
    publisher: Client,
    subscriber: SubscriberClient,
    ops: mpsc::Sender<Op>,
    subs: mpsc::UnboundedSender<SubOp>,
    /// Connections (re-)established so far, by either client.
    epoch: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Result<(), Error>>>,
}

/// Reconnection: at once, then backing off to 1 s between attempts, forever.
fn policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 50, 1_000, 2)
}

fn not_run(why: NotRun) -> BackplaneError {
    BackplaneError::NotRun(why)
}

/// Waits for the answer to a queued command. A writer gone with the
/// command in hand may have sent it.
async fn answer<T>(rx: oneshot::Receiver<Result<T, BackplaneError>>) -> Result<T, BackplaneError> {
    rx.await.unwrap_or_else(|_| Err(Error::new(ErrorKind::Canceled, "the backplane stopped").into()))
}

impl Backplane {
    /// Connects to `url` (`redis://host:port/db`) and starts the writer
    /// tasks; must run on a tokio runtime. Waits up to `wait` for the first
    /// connection; if Redis is not there by then, the backplane keeps
    /// trying in the background (see [`Self::is_connected`]). Fails only
    /// for a URL it cannot use.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self, Error> {
        let mut config = Config::from_url(url)?;
        config.fail_fast = false;
        let builder = || {
            let mut builder = Builder::from_config(config.clone());
            builder
                .set_policy(policy())
                .with_connection_config(|c| {
                    c.connection_timeout = COMMAND_TIMEOUT;
                    // A command cut off by a dropped connection is not sent
                    // again: a numbered publish must not run twice.
                    c.max_command_attempts = 1;
                    // A Redis that stops answering without closing the
                    // connection counts as gone, and is reconnected to.
                    c.unresponsive =
                        UnresponsiveConfig { max_timeout: Some(COMMAND_TIMEOUT), interval: Duration::from_millis(500) };
                })
                .with_performance_config(|c| {
                    c.broadcast_channel_capacity = BROADCAST_CAPACITY;
                    c.default_command_timeout = COMMAND_TIMEOUT;
                });
            builder
        };
        let publisher = builder().build()?;
        let subscriber = builder().build_subscriber_client()?;
        let epoch = Arc::new(AtomicU64::new(0));
        let count = |epoch: &Arc<AtomicU64>| {
            let epoch = epoch.clone();
            move |_| {
                epoch.fetch_add(1, Ordering::AcqRel);
                async { Ok(()) }
            }
        };
        let mut tasks = vec![publisher.on_reconnect(count(&epoch)), subscriber.on_reconnect(count(&epoch))];
        tasks.push(publisher.connect());
        tasks.push(subscriber.connect());
        // Re-subscribes to every channel the client tracks after each
        // (re)connect, as fred's `manage_subscriptions` does, except that it
        // sends nothing while there is nothing to take again: an empty
        // SUBSCRIBE at the first connect would race the first real one.
        let resubscriber = subscriber.clone();
        tasks.push(subscriber.on_reconnect(move |_| {
            let subscriber = resubscriber.clone();
            async move {
                let channels: Vec<String> = subscriber.tracked_channels().into_iter().map(|c| c.to_string()).collect();
                if !channels.is_empty() {
                    if let Err(error) = subscriber.subscribe(channels).await {
                        tracing::warn!(%error, "cluster: could not subscribe again after a reconnect");
                    }
                }
                Ok(())
            }
        }));
        let up = async {
            let _ = publisher.wait_for_connect().await;
            let _ = subscriber.wait_for_connect().await;
        };
        if tokio::time::timeout(wait, up).await.is_err() {
            tracing::warn!(%url, "redis is not reachable yet; relaying starts when it is");
        }
        let (ops, ops_rx) = mpsc::channel(QUEUE_CAPACITY);
        let (subs, subs_rx) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(write(publisher.clone(), ops_rx, epoch.clone())));
        tasks.push(tokio::spawn(follow(subscriber.clone(), subs_rx)));
        Ok(Self { publisher, subscriber, ops, subs, epoch, tasks })
    }

    /// Queues `command` now; the future is its answer.
    fn queue(&self, command: Command) -> impl Future<Output = Result<Value, BackplaneError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        // Both connections: a publish whose subscriber is down would not
        // come back to its own node.
        let refused = if !self.is_connected() {
            Some(not_run(NotRun::Unreachable))
        } else {
            match self.ops.try_send(Op { command, reply }) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some(not_run(NotRun::Overloaded)),
                Err(mpsc::error::TrySendError::Closed(_)) => Some(not_run(NotRun::Stopped)),
            }
        };
        async move {
            match refused {
                Some(error) => Err(error),
                None => answer(rx).await,
            }
        }
    }

    /// Publishes `payload` on `channel`; answers how many subscribers got it.
    pub fn publish(
        &self,
        channel: impl Into<String>,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<u64, BackplaneError>> + Send + 'static {
        let answer = self.queue(Command::Publish { channel: channel.into(), payload });
        async move { Ok(answer.await?.convert()?) }
    }

    /// Increments the counter `keys[0]` (to above `floor` at least), keeps
    /// the payload in the history `keys[2]` as `keep` says, and publishes
    /// `<number>:<payload>` on the channel `keys[1]`, atomically in Redis:
    /// subscribers see numbers in order. `keys[3]` is the epoch, made if
    /// missing. Returns the number.
    pub(crate) fn sequenced_publish(
        &self,
        keys: [String; 4],
        payload: Vec<u8>,
        floor: u64,
        keep: Keep,
    ) -> impl Future<Output = Result<u64, BackplaneError>> + Send + 'static {
        let args = vec![
            Value::Bytes(payload.into()),
            Value::Integer(floor as i64),
            Value::Integer(keep.size as i64),
            Value::Integer(keep.ttl_ms.max(1) as i64),
            Value::String(crate::ids::random_token().into()),
        ];
        let answer = self.queue(Command::Eval { script: &script::SEQUENCED_PUBLISH, keys: keys.into(), args });
        async move { Ok(answer.await?.convert()?) }
    }

    /// Reads the counter `keys[0]`, the epoch `keys[2]` (made if missing),
    /// and up to `limit` entries of the history `keys[1]` numbered above
    /// `after`: `(epoch, latest, [(number, payload)])`.
    pub(crate) fn history(
        &self,
        keys: [String; 3],
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<History, BackplaneError>> + Send + 'static {
        let args = vec![
            Value::String(after.to_string().into()),
            Value::Integer(limit as i64),
            Value::String(crate::ids::random_token().into()),
        ];
        let answer = self.queue(Command::Eval { script: &script::HISTORY, keys: keys.into(), args });
        async move {
            let answer = answer.await?;
            let unreadable = || BackplaneError::Unknown(Error::new(ErrorKind::Parse, "an unreadable history answer"));
            let Value::Array(mut parts) = answer else { return Err(unreadable()) };
            if parts.len() != 3 {
                return Err(unreadable());
            }
            let entries = parts.pop().ok_or_else(unreadable)?;
            let epoch: String = parts.pop().ok_or_else(unreadable)?.convert()?;
            let latest: u64 = parts.pop().ok_or_else(unreadable)?.convert()?;
            let mut read = Vec::new();
            if let Value::Array(entries) = entries {
                for entry in entries {
                    let Value::Array(mut entry) = entry else { return Err(unreadable()) };
                    let fields = entry.pop().ok_or_else(unreadable)?;
                    let id: String = entry.pop().ok_or_else(unreadable)?.convert()?;
                    let seq = id.split('-').next().and_then(|n| n.parse().ok()).ok_or_else(unreadable)?;
                    let Value::Array(mut fields) = fields else { return Err(unreadable()) };
                    let payload = match fields.pop() {
                        Some(Value::Bytes(bytes)) => bytes.to_vec(),
                        Some(Value::String(text)) => text.as_bytes().to_vec(),
                        _ => return Err(unreadable()),
                    };
                    read.push((seq, payload));
                }
            }
            Ok((epoch, latest, read))
        }
    }

    /// Raises the counter `counter` to at least `floor`.
    pub(crate) fn raise_counter(
        &self,
        keys: [String; 2],
        floor: u64,
        renew: bool,
    ) -> impl Future<Output = Result<(), BackplaneError>> + Send + 'static {
        let args = vec![
            Value::Integer(floor.min(i64::MAX as u64) as i64),
            Value::String(crate::ids::random_token().into()),
            Value::String(if renew { "1" } else { "0" }.into()),
        ];
        let answer = self.queue(Command::Eval { script: &script::RAISE_COUNTER, keys: keys.into(), args });
        async move { answer.await.map(drop) }
    }

    /// Runs `script` with `keys` and `args`, in order with every other
    /// command.
    pub(crate) fn eval(
        &self,
        script: &'static Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Value, BackplaneError>> + Send + 'static {
        self.queue(Command::Eval { script, keys, args })
    }

    fn change(&self, subscribe: bool, channel: String) -> impl Future<Output = Result<(), BackplaneError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let refused = if !self.subscriber.is_connected() {
            Some(not_run(NotRun::Unreachable))
        } else {
            self.subs.send(SubOp { subscribe, channel, reply }).err().map(|_| not_run(NotRun::Stopped))
        };
        async move {
            match refused {
                Some(error) => Err(error),
                None => answer(rx).await,
            }
        }
    }

    /// Subscribes to `channel`, now and after every reconnect.
    pub fn subscribe(&self, channel: impl Into<String>) -> impl Future<Output = Result<(), BackplaneError>> + Send + 'static {
        self.change(true, channel.into())
    }

    /// Stops receiving `channel`.
    pub fn unsubscribe(&self, channel: impl Into<String>) -> impl Future<Output = Result<(), BackplaneError>> + Send + 'static {
        self.change(false, channel.into())
    }

    /// Every message on the subscribed channels, in the order received. A
    /// reader that falls more than the buffer behind gets `Lagged`.
    pub fn messages(&self) -> broadcast::Receiver<Message> {
        self.subscriber.message_rx()
    }

    /// How many times either connection has been (re-)established: when
    /// it moves, whatever was in flight may have been lost.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The channels the subscriber holds (or takes again on reconnect).
    pub(crate) fn subscriptions(&self) -> BTreeSet<String> {
        self.subscriber.tracked_channels().into_iter().map(|c| c.to_string()).collect()
    }

    /// Whether both connections are up now.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    /// The publishing client, for commands other than pub/sub.
    pub fn client(&self) -> &Client {
        &self.publisher
    }
}

impl Drop for Backplane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The writer: sends what is queued in pipelined batches, in order. The
/// first batch after each (re)connect loads the scripts ahead of its
/// commands, so a script called in it is there when it runs.
async fn write(client: Client, mut ops: mpsc::Receiver<Op>, epoch: Arc<AtomicU64>) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The connection epoch the scripts were last loaded in.
    let mut loaded = None;
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (commands, replies): (Vec<Command>, Vec<_>) = batch.drain(..).map(|op| (op.command, op.reply)).unzip();
        let now = epoch.load(Ordering::Acquire);
        let load = loaded != Some(now);
        let results = run(&client, load, commands).await;
        if load && !results.iter().all(|r| matches!(r, Err(BackplaneError::NotRun(NotRun::Unreachable)))) {
            loaded = Some(now);
        }
        if results.iter().any(|r| matches!(r, Err(BackplaneError::NotRun(NotRun::NoScript)))) {
            loaded = None;
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
    Ok(())
}

/// One batch: a single command alone, more (or one after loading the
/// scripts) as one pipeline.
async fn run(client: &Client, load: bool, commands: Vec<Command>) -> Vec<Result<Value, BackplaneError>> {
    let count = commands.len();
    if !client.is_connected() {
        return (0..count).map(|_| Err(not_run(NotRun::Unreachable))).collect();
    }
    if count == 1 && !load {
        let command = commands.into_iter().next().expect("one command");
        let result = match command {
            Command::Publish { channel, payload } => client.publish(channel, payload).await,
            Command::Eval { script, keys, args } => client.custom(evalsha(), evalsha_args(script, keys, args)).await,
        };
        return vec![result.map_err(classify)];
    }
    let pipeline = client.pipeline();
    // Queuing in a pipeline only buffers the command; errors surface in `try_all`.
    let loads = if load { script::ALL.len() } else { 0 };
    for script in script::ALL.iter().take(loads) {
        let args = vec![Value::from_static_str("LOAD"), Value::from_static_str(script.source())];
        let _: Result<(), Error> = pipeline.custom(script_load(), args).await;
    }
    for command in commands {
        let _: Result<(), Error> = match command {
            Command::Publish { channel, payload } => pipeline.publish(channel, payload).await,
            Command::Eval { script, keys, args } => pipeline.custom(evalsha(), evalsha_args(script, keys, args)).await,
        };
    }
    let mut results = pipeline.try_all::<Value>().await;
    if let Some(error) = results.iter().take(loads).find_map(|r| r.as_ref().err()) {
        tracing::warn!(%error, "cluster: could not load the Lua scripts into redis");
    }
    let mut results: Vec<_> = results.drain(loads.min(results.len())..).map(|r| r.map_err(classify)).collect();
    results.resize_with(count, || Err(not_run(NotRun::Unreachable)));
    results
}

/// A command's error from Redis: `NOSCRIPT` means it did not run; after
/// anything else it may have.
fn classify(error: Error) -> BackplaneError {
    if error.details().starts_with("NOSCRIPT") {
        not_run(NotRun::NoScript)
    } else {
        BackplaneError::Unknown(error)
    }
}

/// `EVALSHA`, as a command pipelines accept.
fn evalsha() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::FirstKey, false)
}

/// `SCRIPT`, as a command pipelines accept.
fn script_load() -> CustomCommand {
    CustomCommand::new_static("SCRIPT", ClusterHash::Random, false)
}

/// `EVALSHA`'s arguments: the script's SHA-1, the number of keys, the keys, the arguments.
fn evalsha_args(script: &'static Script, keys: Vec<String>, args: Vec<Value>) -> Vec<Value> {
    let mut all = Vec::with_capacity(2 + keys.len() + args.len());
    all.push(Value::String(script.sha().to_owned().into()));
    all.push(Value::Integer(keys.len() as i64));
    all.extend(keys.into_iter().map(|k| Value::String(k.into())));
    all.extend(args);
    all
}

/// The subscription follower: applies changes in order, merging runs of
/// the same kind into one command.
async fn follow(subscriber: SubscriberClient, mut subs: mpsc::UnboundedReceiver<SubOp>) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while subs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut ops = batch.drain(..).peekable();
        while let Some(first) = ops.next() {
            let subscribe = first.subscribe;
            let mut run = vec![first];
            while let Some(next) = ops.next_if(|op| op.subscribe == subscribe) {
                run.push(next);
            }
            let channels: Vec<String> = run.iter().map(|op| op.channel.clone()).collect();
            let result =
                if subscribe { subscriber.subscribe(channels).await } else { subscriber.unsubscribe(channels).await };
            for op in run {
                let _ = op.reply.send(result.clone().map_err(BackplaneError::Unknown));
            }
        }
    }
    Ok(())
}

/// A channel's epoch, latest number, and `(number, payload)` history entries.
type History = (String, u64, Vec<(u64, Vec<u8>)>);
