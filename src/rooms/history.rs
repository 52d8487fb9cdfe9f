//! What a room keeps of its messages on this node, for clients that come
//! back after a disconnect.
//!
//! Each room has a [`Stream`]: its `seq` counter and its log, the latest
//! `history.size` messages as the very frames its members were sent (a
//! reference count each, not a copy). The shard keeps a room's stream for
//! the node's lifetime, so numbering and history outlive the room's actor:
//! a room without members keeps its history until `history.ttl_ms` after
//! its last publish.
//!
//! The [`Archive`] holds what every stream shares: the limits, the node's
//! `epoch`, and the ledger that keeps all history under `history.max_bytes`
//! by dropping the node's oldest messages first, and drops a room's history
//! once its time to live has passed. A stream is numbered, encoded and
//! logged under its own lock only; the ledger's lock is taken after it, to
//! account for the change (never the other way round, so two rooms
//! publishing never wait for each other beyond that bookkeeping).
//!
//! With clustering, history lives in Redis instead (see
//! [`crate::cluster::Membership`]): only the `seq` of a stream is used.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::namespace::Namespace;
use crate::config::HistoryConfig;
use crate::metrics::{Eviction, Metrics};
use crate::protocol::Encoded;

/// What one held message costs beyond its frame's bytes: its place in the
/// log, and the header the frame's shared buffer has (32 bytes as
/// allocated) with the few bytes of slack its buffer keeps (at most 32 for
/// any `seq` and `ts` of this century).
const ENTRY_COST: usize = std::mem::size_of::<Entry>() + 64;

/// A room's numbering and its history on this node.
pub(crate) struct Stream {
    /// The last `seq` given out (0 before the first message).
    pub seq: AtomicU64,
    /// The room's namespace, resolved once for the node's lifetime: its
    /// history limits apply here, and the room reads the rest.
    pub namespace: Arc<Namespace>,
    /// Allocated while it holds messages.
    log: Mutex<Option<Box<Log>>>,
}

/// A stream's held messages, oldest first, with no `seq` missing between them.
struct Log {
    entries: VecDeque<Entry>,
    /// When the history runs out (ms on the archive's clock): `ttl_ms`
    /// after the last publish.
    expires: u64,
    /// The stream's keys in the ledger, as the ledger last filed it.
    filed: Option<Filed>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Filed {
    oldest: u64,
    expires: u64,
}

struct Entry {
    seq: u64,
    /// Its place in the node's order of messages kept.
    stamp: u64,
    frame: Encoded,
}

impl Entry {
    fn cost(&self) -> usize {
        ENTRY_COST + self.frame.wire().len()
    }
}

/// What a join with `since` gets from a stream.
pub(crate) struct Replay {
    /// The stream's latest `seq`.
    pub latest: u64,
    /// The messages after `since`, in order; `None` when history does not
    /// hold every one of them (or `since` is past `latest`).
    pub frames: Option<Vec<Encoded>>,
}

/// A page of a stream's history.
pub(crate) struct Page {
    pub latest: u64,
    pub frames: Vec<Encoded>,
}

/// Every stream's history on this node: the limits, the epoch, the ledger.
pub struct Archive {
    config: HistoryConfig,
    epoch: Arc<str>,
    started: Instant,
    /// Orders messages across streams.
    stamps: AtomicU64,
    ledger: Mutex<Ledger>,
    metrics: Arc<Metrics>,
}

/// The node-wide view: bytes held, and the streams by oldest message and by
/// expiry (each stream filed once in each while it holds messages).
#[derive(Default)]
struct Ledger {
    bytes: usize,
    messages: usize,
    /// The stamp of each stream's oldest message.
    oldest: BTreeMap<u64, Arc<Stream>>,
    /// Each stream's expiry, with its oldest stamp to keep keys apart.
    expiries: BTreeMap<(u64, u64), Arc<Stream>>,
}

impl Stream {
    pub(crate) fn new(namespace: Arc<Namespace>) -> Self {
        Self { seq: AtomicU64::new(0), namespace, log: Mutex::new(None) }
    }

    /// The last `seq` given out.
    pub(crate) fn latest(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

impl Archive {
    pub fn new(config: HistoryConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            epoch: crate::ids::random_token().into(),
            started: Instant::now(),
            stamps: AtomicU64::new(0),
            ledger: Mutex::default(),
            metrics,
        }
    }

    /// This node's epoch: every stream on a single node is numbered from
    /// its start, so one epoch names them all and a restart changes it.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    pub(crate) fn config(&self) -> &HistoryConfig {
        &self.config
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Numbers the next message of `stream`, builds its frame with that
    /// `seq`, and keeps the frame in the stream's history: one step, so
    /// the log never lacks a `seq` given out.
    pub(crate) fn publish(&self, stream: &Arc<Stream>, build: impl FnOnce(u64) -> Encoded) -> (u64, Encoded) {
        let keep = stream.namespace.history;
        if keep.size == 0 {
            let seq = stream.seq.fetch_add(1, Ordering::Relaxed) + 1;
            return (seq, build(seq));
        }
        let now = self.now();
        let (seq, frame, added, dropped) = {
            let mut log = stream.log.lock();
            let seq = stream.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let frame = build(seq);
            let log = log.get_or_insert_with(|| {
                Box::new(Log { entries: VecDeque::new(), expires: 0, filed: None })
            });
            // An expired history the sweep has not reached yet goes first:
            // what is kept must be unbroken.
            let mut dropped = (0, 0, 0);
            if log.expires <= now && !log.entries.is_empty() {
                dropped.2 = log.entries.len();
                dropped.0 += log.entries.iter().map(Entry::cost).sum::<usize>();
                log.entries.clear();
            }
            let entry = Entry { seq, stamp: self.stamps.fetch_add(1, Ordering::Relaxed), frame: frame.clone() };
            let added = entry.cost();
            log.entries.push_back(entry);
            while log.entries.len() > keep.size {
                let old = log.entries.pop_front().expect("over size, so not empty");
                dropped.0 += old.cost();
                dropped.1 += 1;
            }
            log.expires = now + keep.ttl_ms;
            (seq, frame, added, dropped)
        };
        let (bytes, sized_out, expired) = dropped;
        self.metrics.evicted(Eviction::Size, sized_out as u64);
        self.metrics.evicted(Eviction::Ttl, expired as u64);
        let mut ledger = self.ledger.lock();
        ledger.bytes = ledger.bytes + added - bytes;
        ledger.messages = ledger.messages + 1 - sized_out - expired;
        ledger.refile(stream);
        self.sweep_locked(&mut ledger, now);
        while ledger.bytes > self.config.max_bytes {
            if !self.evict_oldest(&mut ledger) {
                break;
            }
        }
        self.report(&ledger);
        (seq, frame)
    }

    /// Drops the history of every stream whose time to live has passed.
    pub(crate) fn sweep(&self) {
        let mut ledger = self.ledger.lock();
        self.sweep_locked(&mut ledger, self.now());
        self.report(&ledger);
    }

    fn sweep_locked(&self, ledger: &mut Ledger, now: u64) {
        while let Some(entry) = ledger.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let stream = entry.get().clone();
            let mut log = stream.log.lock();
            // Filed streams hold a log (see `Ledger::refile`).
            let held = log.as_mut().expect("a filed stream has a log");
            if held.expires > now {
                // Published to since it was filed: filed again below.
                drop(log);
                ledger.refile(&stream);
                continue;
            }
            let (bytes, messages) = (held.entries.iter().map(Entry::cost).sum::<usize>(), held.entries.len());
            held.entries.clear();
            drop(log);
            ledger.bytes -= bytes;
            ledger.messages -= messages;
            self.metrics.evicted(Eviction::Ttl, messages as u64);
            ledger.refile(&stream);
        }
    }

    /// Drops the node's oldest message: false when none is held.
    fn evict_oldest(&self, ledger: &mut Ledger) -> bool {
        let Some(stream) = ledger.oldest.first_key_value().map(|(_, stream)| stream.clone()) else { return false };
        if let Some(log) = stream.log.lock().as_mut() {
            if let Some(old) = log.entries.pop_front() {
                ledger.bytes -= old.cost();
                ledger.messages -= 1;
                self.metrics.evicted(Eviction::MaxBytes, 1);
            }
        }
        ledger.refile(&stream);
        true
    }

    fn report(&self, ledger: &Ledger) {
        self.metrics.history_bytes.set(ledger.bytes as i64);
        self.metrics.history_messages.set(ledger.messages as i64);
    }

    /// What a join with `since` replays: the messages of `stream` after
    /// `since`, when history holds every one of them.
    pub(crate) fn replay(&self, stream: &Stream, since: u64) -> Replay {
        let now = self.now();
        let log = stream.log.lock();
        let latest = stream.latest();
        if since > latest {
            return Replay { latest, frames: None };
        }
        if since == latest {
            return Replay { latest, frames: Some(Vec::new()) };
        }
        let held = log.as_ref().filter(|log| log.expires > now).map(|log| &log.entries);
        let frames = held.and_then(|entries| {
            let first = entries.front()?.seq;
            if first > since + 1 {
                return None;
            }
            let skip = (since + 1 - first) as usize;
            let frames: Vec<Encoded> = entries.iter().skip(skip).map(|e| e.frame.clone()).collect();
            (entries.back()?.seq == latest).then_some(frames)
        });
        Replay { latest, frames }
    }

    /// Up to `limit` held messages of `stream` after `since`, oldest first.
    pub(crate) fn page(&self, stream: &Stream, since: u64, limit: usize) -> Page {
        let now = self.now();
        let log = stream.log.lock();
        let latest = stream.latest();
        let frames = log
            .as_ref()
            .filter(|log| log.expires > now)
            .map(|log| log.entries.iter().filter(|e| e.seq > since).take(limit).map(|e| e.frame.clone()).collect())
            .unwrap_or_default();
        Page { latest, frames }
    }
}

impl Ledger {
    /// Files `stream` again under its current oldest message and expiry
    /// (or nowhere, when it holds none: its log then goes back). A stream
    /// is filed exactly while its log exists and holds a message.
    fn refile(&mut self, stream: &Arc<Stream>) {
        let mut log = stream.log.lock();
        let Some(held) = log.as_mut() else { return };
        let now = held.entries.front().map(|oldest| Filed { oldest: oldest.stamp, expires: held.expires });
        if now == held.filed {
            return;
        }
        if let Some(old) = held.filed.take() {
            self.oldest.remove(&old.oldest);
            self.expiries.remove(&(old.expires, old.oldest));
        }
        if let Some(new) = now {
            self.oldest.insert(new.oldest, stream.clone());
            self.expiries.insert((new.expires, new.oldest), stream.clone());
            held.filed = Some(new);
        } else {
            // Nothing held: the log goes back.
            *log = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerKind;

    fn archive(size: usize, ttl_ms: u64, max_bytes: usize) -> (Archive, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Archive::new(HistoryConfig { size, ttl_ms, max_bytes }, metrics.clone()), metrics)
    }

    /// A stream whose namespace keeps what `archive` was configured with.
    fn stream(archive: &Archive) -> Arc<Stream> {
        let config = crate::config::Config { history: archive.config().clone(), ..Default::default() };
        Arc::new(Stream::new(crate::rooms::Namespaces::new(&config).default_namespace().clone()))
    }

    fn publish(archive: &Archive, stream: &Arc<Stream>) -> (u64, Encoded) {
        archive.publish(stream, |seq| Encoded::new(ServerKind::Message, &format!(r#"{{"seq":{seq}}}"#)))
    }

    fn seqs(frames: &[Encoded]) -> Vec<String> {
        frames.iter().map(|f| f.text().to_owned()).collect()
    }

    #[test]
    fn a_held_message_is_the_frame_that_went_out_not_a_copy() {
        let (archive, _) = archive(10, 60_000, usize::MAX);
        let stream = stream(&archive);
        let (seq, sent) = publish(&archive, &stream);
        let replayed = archive.replay(&stream, 0).frames.unwrap();
        assert_eq!(seq, 1);
        assert_eq!(replayed[0].wire().as_ptr(), sent.wire().as_ptr(), "the same bytes, shared");
    }

    #[test]
    fn replay_is_whole_or_nothing() {
        let (archive, metrics) = archive(3, 60_000, usize::MAX);
        let stream = stream(&archive);
        for _ in 0..5 {
            publish(&archive, &stream);
        }
        let replay = archive.replay(&stream, 2);
        assert_eq!((replay.latest, seqs(&replay.frames.unwrap())), (5, vec![r#"{"seq":3}"#.into(), r#"{"seq":4}"#.into(), r#"{"seq":5}"#.into()]));
        assert!(archive.replay(&stream, 1).frames.is_none(), "4 is older than the history");
        assert_eq!(archive.replay(&stream, 5).frames.map(|f| f.len()), Some(0), "nothing missed");
        assert!(archive.replay(&stream, 6).frames.is_none(), "past the latest");
        assert_eq!(metrics.history_messages.get(), 3);
        assert_eq!(archive.page(&stream, 3, 1).frames.len(), 1);
    }

    #[test]
    fn an_expired_history_is_dropped_and_numbering_goes_on() {
        let (archive, metrics) = archive(10, 20, usize::MAX);
        let stream = stream(&archive);
        publish(&archive, &stream);
        publish(&archive, &stream);
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(archive.replay(&stream, 0).frames.is_none(), "expired before any sweep");
        archive.sweep();
        assert_eq!((metrics.history_messages.get(), metrics.history_bytes.get()), (0, 0));
        assert!(stream.log.lock().is_none(), "an empty history keeps no log");
        assert_eq!(publish(&archive, &stream).0, 3);
        assert_eq!(archive.replay(&stream, 2).frames.map(|f| f.len()), Some(1));
    }

    #[test]
    fn the_node_s_oldest_messages_go_first_past_max_bytes() {
        let one = ENTRY_COST + Encoded::new(ServerKind::Message, r#"{"seq":1}"#).wire().len();
        let (archive, metrics) = archive(100, 60_000, one * 4);
        let (a, b) = (stream(&archive), stream(&archive));
        publish(&archive, &a);
        publish(&archive, &a);
        publish(&archive, &b);
        publish(&archive, &a);
        publish(&archive, &b);
        publish(&archive, &b);
        // Six messages, room for four: a's first two went.
        assert_eq!(metrics.history_messages.get(), 4);
        assert!(metrics.history_bytes.get() as usize <= one * 4);
        assert!(archive.replay(&a, 2).frames.is_some() && archive.replay(&a, 1).frames.is_none());
        assert_eq!(archive.replay(&b, 0).frames.map(|f| f.len()), Some(3));
    }

    #[test]
    fn each_stream_keeps_what_its_namespace_says() {
        let (archive, _) = archive(3, 60_000, usize::MAX);
        let config = crate::config::Config::from_toml(
            "[history]\nsize = 3\n[[namespaces]]\nprefix = \"one.\"\nhistory_size = 1\n[[namespaces]]\nprefix = \"brief.\"\nhistory_ttl_ms = 20\n",
        )
        .unwrap();
        let namespaces = crate::rooms::Namespaces::new(&config);
        let stream = |name: &str| Arc::new(Stream::new(namespaces.resolve(name).clone()));
        let (one, brief, other) = (stream("one.a"), stream("brief.a"), stream("lobby"));
        for stream in [&one, &brief, &other] {
            for _ in 0..4 {
                publish(&archive, stream);
            }
        }
        assert!(archive.replay(&one, 3).frames.is_some() && archive.replay(&one, 2).frames.is_none());
        assert!(archive.replay(&other, 1).frames.is_some() && archive.replay(&other, 0).frames.is_none());
        assert!(archive.replay(&brief, 1).frames.is_some());
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(archive.replay(&brief, 1).frames.is_none(), "brief.'s history expired");
        assert!(archive.replay(&other, 1).frames.is_some(), "the default's did not");
    }

    #[test]
    fn size_zero_keeps_nothing() {
        let (archive, metrics) = archive(0, 1, usize::MAX);
        let stream = stream(&archive);
        assert_eq!(publish(&archive, &stream).0, 1);
        assert!(archive.replay(&stream, 0).frames.is_none());
        assert_eq!(metrics.history_messages.get(), 0);
    }
}
