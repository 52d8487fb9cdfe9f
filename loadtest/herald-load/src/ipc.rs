//! What the coordinator and its worker processes say to each other: one JSON
//! object per line, commands on the worker's stdin, events on its stdout.
//!
//! A run goes `setup` → `connected` → (`step` → `step_done`)* → `finish` →
//! `finished`; a `recover` run goes `setup` → `connected` → `drop` →
//! `rejoined` → `verify` → `verified` → `finish` → `finished`. Every event carries the [`Trouble`] seen since the previous
//! one, so the coordinator can attribute failures to the step they happened in.

use std::io::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cli::{Dialect, Transport};
use crate::schedule::Step;

/// Coordinator → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open this worker's connections (always the first command).
    Setup(Setup),
    /// Run one fan-out step on the open connections.
    Step(Step),
    /// `recover`: every client drops its connection at one instant and rejoins with `since`.
    Drop(DropAt),
    /// `recover`: check every client against its room's final `seq` (index: room).
    Verify { final_seqs: Vec<u64> },
    /// Close every connection, report, exit.
    Finish,
}

/// A worker's share of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// The exact URL to connect to, without a token.
    pub url: String,
    /// The exact URL publishers connect to instead of `url`, without a token.
    pub publish_url: Option<String>,
    pub dialect: Dialect,
    /// How Socket.IO clients connect (`url` is made for it).
    #[serde(default)]
    pub transport: Transport,
    pub secret: Option<String>,
    pub sources: Vec<Ipv4Addr>,
    /// Global index of this worker's first connection; it opens `count` from there.
    pub first: usize,
    pub count: usize,
    /// Rooms to join, for `fanout` and `ramp`.
    pub rooms: Option<RoomPlan>,
    /// Put before each room's name (`--room-prefix`).
    pub room_prefix: String,
    /// Milliseconds from now until the connect phase ends.
    pub connect_timeout_ms: u64,
    /// `recover`: the clients of a reconnect storm (then `rooms` is `None`).
    #[serde(default)]
    pub storm: Option<StormPlan>,
}

/// The clients of a `recover` run: client `i` is in room `i % rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StormPlan {
    pub rooms: usize,
    /// Reconnects one worker has in progress at once after the drop.
    pub reconnect_in_flight: usize,
}

impl StormPlan {
    pub fn room_of(&self, index: usize) -> usize {
        index % self.rooms
    }
}

/// When the clients drop (µs since the epoch), and by when they must have rejoined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DropAt {
    pub at_us: u64,
    pub deadline_us: u64,
}

/// How global connection indices map to rooms: connection `i` is member
/// `i % members` of room `i / members`, and members below `publishers` publish.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoomPlan {
    pub rooms: usize,
    pub members: usize,
    pub publishers: usize,
    pub payload_bytes: usize,
}

impl RoomPlan {
    pub fn room_of(&self, index: usize) -> usize {
        index / self.members
    }

    /// The global publisher number of connection `index`, if it publishes.
    pub fn publisher_of(&self, index: usize) -> Option<usize> {
        let member = index % self.members;
        (member < self.publishers).then(|| self.room_of(index) * self.publishers + member)
    }

    pub fn total_publishers(&self) -> usize {
        self.rooms * self.publishers
    }
}

/// Name of room `r` in every dialect.
pub fn room_name(r: usize) -> String {
    prefixed_room_name("", r)
}

/// Name of room `r` after `prefix`: `live.load-3`.
pub fn prefixed_room_name(prefix: &str, r: usize) -> String {
    format!("{prefix}load-{r}")
}

impl Setup {
    /// The room connection `index` joins, if this run has rooms.
    pub fn room_of(&self, index: usize) -> Option<String> {
        self.rooms.map(|plan| prefixed_room_name(&self.room_prefix, plan.room_of(index)))
    }
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The connect phase is over.
    Connected(Connected),
    /// A step's drain is over.
    StepDone(StepDone),
    /// `recover`: every client has rejoined, or failed to by the deadline.
    Rejoined(Rejoined),
    /// `recover`: the check of every client.
    Verified(Verified),
    /// Every connection is closed.
    Finished { trouble: Trouble },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connected {
    pub connected: u64,
    pub failures: u64,
    pub failure_samples: Vec<String>,
    /// Connections whose `welcome` named a user (token accepted).
    pub authenticated: u64,
    /// Per-connection time from TCP connect to `welcome` (and `joined`), µs histogram.
    pub connect_us: Vec<(u64, u64)>,
    /// Presence frames received while this worker's connections were joining.
    pub presence: PresenceSeen,
    pub trouble: Trouble,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepDone {
    /// Measured messages sent by this worker's publishers.
    pub published: u64,
    /// Measured messages this worker's publishers had not sent when the step ended.
    pub unsent: u64,
    /// Measured messages received by this worker's members.
    pub deliveries: u64,
    /// Delivery latency, µs histogram.
    pub latency_us: Vec<(u64, u64)>,
    /// Measured publishes' send time minus scheduled time, µs histogram.
    pub send_lag_us: Vec<(u64, u64)>,
    /// Presence frames received since the previous report, until the drain ended.
    pub presence: PresenceSeen,
    pub trouble: Trouble,
}

/// How a worker's clients came back after the drop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rejoined {
    /// Clients open when the drop came.
    pub dropped: u64,
    /// Clients whose rejoin got `joined` with `recovered: true`.
    pub recovered: u64,
    /// Clients whose rejoin got `joined` with `recovered: false` (or none).
    pub unrecovered: u64,
    pub unrecovered_samples: Vec<String>,
    /// Clients that did not get `joined` again before the deadline.
    pub not_rejoined: u64,
    pub not_rejoined_samples: Vec<String>,
    /// Failed reconnect attempts that were tried again.
    pub retries: u64,
    pub retry_samples: Vec<String>,
    /// Rejoins whose `epoch` differs from the first `joined`'s.
    pub epoch_changed: u64,
    /// Per client, from the drop to `joined` with `recovered: true`, µs histogram.
    pub recover_us: Vec<(u64, u64)>,
    /// Per client, from the drop to its `welcome` on the new connection, µs histogram.
    pub reconnect_us: Vec<(u64, u64)>,
    /// Wall clock (µs) of the last `joined` with `recovered: true`, and of the last of any kind.
    pub last_recovered_us: Option<u64>,
    pub last_joined_us: Option<u64>,
    pub trouble: Trouble,
}

/// The check of a worker's clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verified {
    pub tally: crate::recovery::Tally,
    /// Clients left out of the check: their connection failed or ended early,
    /// or they never rejoined.
    pub unchecked: u64,
    /// Which client missed or repeated what.
    pub samples: Vec<String>,
    /// Messages received after a rejoin's `joined` with `seq` up to its `seq`: the replay.
    pub replayed: u64,
    /// Per client, from the drop until it had every message up to its rejoin's `seq`, µs histogram.
    pub caught_up_us: Vec<(u64, u64)>,
    pub trouble: Trouble,
}

/// `user_joined` and `user_left` frames for the members' own rooms. They are
/// expected, never trouble, but counted: in a big room with presence on,
/// they are most of what the server sends while members join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceSeen {
    pub frames: u64,
    /// When the last one arrived, µs since the epoch.
    pub last_us: Option<u64>,
}

impl PresenceSeen {
    /// Counts one frame arriving now.
    pub fn record(&mut self) {
        self.frames += 1;
        self.last_us = Some(crate::now_us());
    }

    pub fn add(&mut self, other: &PresenceSeen) {
        self.frames += other.frames;
        self.last_us = self.last_us.max(other.last_us);
    }
}

/// Frames nobody expected and connections that ended before their time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trouble {
    pub unexpected_frames: u64,
    pub unexpected_samples: Vec<String>,
    pub closed_early: u64,
    pub closed_samples: Vec<String>,
}

/// Samples kept of each kind of trouble: enough to see what went wrong.
pub const SAMPLES: usize = 5;

/// Longest sample text kept.
const SAMPLE_CHARS: usize = 200;

/// Keeps `text` (shortened) if fewer than [`SAMPLES`] are kept already.
pub fn push_sample(samples: &mut Vec<String>, text: &str) {
    if samples.len() < SAMPLES {
        samples.push(text.chars().take(SAMPLE_CHARS).collect());
    }
}

impl Trouble {
    pub fn unexpected(&mut self, text: &str) {
        self.unexpected_frames += 1;
        push_sample(&mut self.unexpected_samples, text);
    }

    pub fn closed(&mut self, reason: &str) {
        self.closed_early += 1;
        push_sample(&mut self.closed_samples, reason);
    }

    pub fn add(&mut self, other: &Trouble) {
        self.unexpected_frames += other.unexpected_frames;
        self.closed_early += other.closed_early;
        for s in &other.unexpected_samples {
            push_sample(&mut self.unexpected_samples, s);
        }
        for s in &other.closed_samples {
            push_sample(&mut self.closed_samples, s);
        }
    }

    pub fn is_clean(&self) -> bool {
        self.unexpected_frames == 0 && self.closed_early == 0
    }
}

/// Writes one message as a line and flushes, so the reader sees it at once.
pub fn write_line<T: Serialize>(out: &mut impl Write, message: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_plan_spreads_members_and_numbers_publishers() {
        let plan = RoomPlan { rooms: 4, members: 10, publishers: 2, payload_bytes: 100 };
        assert_eq!(plan.room_of(0), 0);
        assert_eq!(plan.room_of(39), 3);
        let publishers: Vec<usize> = (0..40).filter_map(|i| plan.publisher_of(i)).collect();
        assert_eq!(publishers, (0..8).collect::<Vec<_>>());
        assert_eq!(plan.publisher_of(10), Some(2));
        assert_eq!(plan.publisher_of(11), Some(3));
        assert_eq!(plan.publisher_of(12), None);
    }

    #[test]
    fn rooms_are_named_after_the_prefix() {
        let setup = |prefix: &str, rooms| Setup {
            url: "ws://127.0.0.1:1/ws".into(),
            publish_url: None,
            dialect: Dialect::Herald,
            transport: Transport::Websocket,
            secret: None,
            sources: Vec::new(),
            first: 0,
            count: 20,
            rooms,
            room_prefix: prefix.into(),
            connect_timeout_ms: 1,
            storm: None,
        };
        let plan = RoomPlan { rooms: 2, members: 10, publishers: 1, payload_bytes: 100 };
        assert_eq!(setup("", Some(plan)).room_of(3).as_deref(), Some("load-0"));
        assert_eq!(setup("live.", Some(plan)).room_of(13).as_deref(), Some("live.load-1"));
        assert_eq!(setup("live.", None).room_of(13), None);
    }

    #[test]
    fn presence_counts_add_up_and_keep_the_latest() {
        let mut total = PresenceSeen::default();
        let mut a = PresenceSeen::default();
        a.record();
        a.record();
        let b = PresenceSeen { frames: 3, last_us: Some(1) };
        total.add(&a);
        total.add(&b);
        assert_eq!(total.frames, 5);
        assert_eq!(total.last_us, a.last_us);
        total.add(&PresenceSeen::default());
        assert_eq!(total.last_us, a.last_us);
    }

    #[test]
    fn commands_and_events_are_one_line_each() {
        let mut out = Vec::new();
        write_line(&mut out, &Command::Finish).unwrap();
        write_line(&mut out, &Event::Finished { trouble: Trouble::default() }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(matches!(serde_json::from_str::<Command>(lines[0]).unwrap(), Command::Finish));
        assert!(matches!(serde_json::from_str::<Event>(lines[1]).unwrap(), Event::Finished { .. }));
    }

    #[test]
    fn storm_commands_round_trip() {
        let mut out = Vec::new();
        write_line(&mut out, &Command::Drop(DropAt { at_us: 5, deadline_us: 9 })).unwrap();
        write_line(&mut out, &Command::Verify { final_seqs: vec![3, 4] }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(matches!(serde_json::from_str(lines[0]).unwrap(), Command::Drop(DropAt { at_us: 5, deadline_us: 9 })));
        match serde_json::from_str(lines[1]).unwrap() {
            Command::Verify { final_seqs } => assert_eq!(final_seqs, vec![3, 4]),
            other => panic!("{other:?}"),
        }
        let plan = StormPlan { rooms: 100, reconnect_in_flight: 10 };
        assert_eq!(plan.room_of(250), 50);
    }

    #[test]
    fn trouble_keeps_a_few_samples_and_every_count() {
        let mut t = Trouble::default();
        for i in 0..20 {
            t.unexpected(&format!("frame {i}"));
        }
        let mut total = Trouble::default();
        total.add(&t);
        total.add(&t);
        assert_eq!(total.unexpected_frames, 40);
        assert_eq!(total.unexpected_samples.len(), SAMPLES);
        assert!(!total.is_clean());
    }
}
