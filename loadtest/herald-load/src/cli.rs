//! The command line: four measuring modes (`idle`, `fanout`, `ramp`,
//! `recover`) and the
//! hidden `worker` subcommand the coordinator runs as its child processes.
//!
//! Every flag here is part of a fixed interface that benchmark scripts call,
//! so names and defaults change only together with those scripts.

use std::net::Ipv4Addr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load generator for Herald and for servers speaking its dialect or Socket.IO's.
#[derive(Debug, Parser)]
#[command(name = "herald-load", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Open many connections, hold them idle, report the server's memory and CPU per connection.
    Idle(IdleArgs),
    /// Rooms of members with publishers at a fixed total rate: delivery latency, loss, server CPU.
    Fanout(FanoutArgs),
    /// Fan-out steps at growing rates on one set of connections, until a step misses its thresholds.
    Ramp(RampArgs),
    /// A reconnect storm: every client drops at once, rejoins with `since`, and must miss nothing.
    Recover(RecoverArgs),
    /// A child process of the coordinator; talks JSON lines over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Wire dialect of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Herald's JSON frames (also spoken by the Node `ws` and uWebSockets.js peers).
    Herald,
    /// Socket.IO v4 events over a raw engine.io WebSocket.
    Socketio,
}

/// How a Socket.IO client reaches the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// engine.io over one WebSocket (every dialect).
    #[default]
    Websocket,
    /// engine.io's HTTP long polling (Socket.IO dialect, `idle` only): a
    /// long-poll GET always outstanding, pings answered with a POST.
    Polling,
}

/// Flags every mode shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// WebSocket URL; with `--dialect socketio`, the server's base URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Wire dialect of the server.
    #[arg(long, value_enum, default_value_t = Dialect::Herald)]
    pub dialect: Dialect,
    /// HS256 secret: each connection gets a token with `sub = "load-<index>"`: `?token=`
    /// (Herald dialect) or `40{"token":...}`, the connect packet's auth (Socket.IO).
    #[arg(long)]
    pub secret: Option<String>,
    /// Local source addresses, assigned round-robin: `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9", value_parser = parse_sources)]
    pub sources: Sources,
    /// Most connections one worker process opens.
    #[arg(long, default_value_t = 15000)]
    pub per_process: usize,
    /// The server's process id, for its memory (VmRSS) and CPU time.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Deadline of the whole connect phase, in seconds; connections not open by then are failures.
    #[arg(long, default_value_t = 120)]
    pub connect_timeout_secs: u64,
}

/// `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open.
    #[arg(long)]
    pub connections: usize,
    /// Seconds to hold the connections idle before measuring.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// engine.io transport; `polling` needs `--dialect socketio`.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
}

/// The rooms, members and thresholds `fanout` and `ramp` share.
#[derive(Debug, Clone, Args)]
pub struct ShapeArgs {
    /// Rooms.
    #[arg(long)]
    pub rooms: usize,
    /// Member connections per room.
    #[arg(long)]
    pub members: usize,
    /// Publishers per room (its first members).
    #[arg(long)]
    pub publishers: usize,
    /// Approximate size of each published `data` object in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Seconds of publishing before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Largest 99th-percentile latency, in milliseconds, for a run to count as held.
    #[arg(long, default_value_t = 100.0)]
    pub max_p99_ms: f64,
    /// Largest fraction of lost deliveries for a run to count as held.
    #[arg(long, default_value_t = 0.001)]
    pub max_loss: f64,
    /// Put before every room's name: `--room-prefix live.` makes the rooms
    /// `live.load-<r>`, so they fall in the server's namespace of that prefix.
    #[arg(long, default_value = "", value_parser = parse_room_prefix)]
    pub room_prefix: String,
}

/// Where the publishers of `fanout` and `ramp` connect, when not to `--url`:
/// another node of a cluster, to measure delivery from one node to another.
#[derive(Debug, Clone, Default, Args)]
pub struct PublishArgs {
    /// WebSocket URL (Socket.IO: base URL) of the publishing connections, the first
    /// `--publishers` members of each room; the other members stay on `--url`.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// The process id of the server at `--publish-url`, for its CPU time.
    #[arg(long, requires = "publish_url")]
    pub publish_server_pid: Option<u32>,
}

/// `fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Publishes per second, all publishers together.
    #[arg(long)]
    pub rate: f64,
    /// Seconds of measured publishing (after the warm-up).
    #[arg(long)]
    pub duration_secs: f64,
    /// Once every member has joined, wait up to this many seconds for the
    /// server to go quiet (under 5% of a core for a second) before
    /// publishing, so that work left from the joins (presence frames still
    /// queued) does not fall into the measurement. 0: start at once.
    #[arg(long, default_value_t = 0.0, requires = "server_pid")]
    pub settle_secs: f64,
}

/// `ramp`.
#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Publishes per second of the first step.
    #[arg(long)]
    pub start_rate: f64,
    /// Each step's rate is the previous one's times this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// No step runs faster than this.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Seconds of measured publishing per step.
    #[arg(long, alias = "duration-secs", default_value_t = 10.0)]
    pub step_secs: f64,
}

/// `recover`.
#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients; client `i` is in room `load-<i % rooms>`.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Publishes per second, all rooms together (round-robin over the rooms), for the whole run.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Approximate size of each published `data` object in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How the publishers publish: `api` (`POST /api/publish`) or `ws` (WebSocket
    /// connections that join their rooms and publish with `echo: false`).
    #[arg(long, value_enum, default_value_t = PublishVia::Api)]
    pub publish_via: PublishVia,
    /// Publishing connections (one thread each); connection `j` owns the rooms `r` with `r % n == j`.
    #[arg(long, default_value_t = 2)]
    pub publish_connections: usize,
    /// Base URL of the server API; default: `http://` and the host and port of `--url`.
    #[arg(long)]
    pub api_url: Option<String>,
    /// The server's `api.key`, sent as `Authorization: Bearer <key>`. Needed with
    /// `--publish-via api`; with `ws`, without it the rooms' final `seq`s are the
    /// last acknowledged ones instead of the history API's.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Seconds of publishing before the drop.
    #[arg(long, default_value_t = 5.0)]
    pub before_secs: f64,
    /// Seconds of publishing after every client has rejoined.
    #[arg(long, default_value_t = 5.0)]
    pub after_secs: f64,
    /// Longest the clients may take to rejoin after the drop; later is a failure.
    #[arg(long, default_value_t = 60.0)]
    pub recover_timeout_secs: f64,
    /// Seconds between the publishers' stop and the check, for the last
    /// deliveries; the check then waits up to 30 s more for any client
    /// still short of its room's final `seq`.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,
    /// Reconnects one worker process has in progress at once after the drop.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_in_flight: usize,
}

/// How `recover` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishVia {
    /// `POST /api/publish`, one kept-alive HTTP connection per publishing thread.
    Api,
    /// A WebSocket connection per publishing thread, joined to the rooms it publishes to.
    Ws,
}

/// Accepts what may start a Herald room name: `[A-Za-z0-9_.:-]`, at most
/// 64 bytes (a name is at most 128), so it can go into a frame unescaped.
pub fn parse_room_prefix(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
    match text.len() <= 64 && text.chars().all(allowed) {
        true => Ok(text.to_string()),
        false => Err(format!("{text:?}: a room prefix is at most 64 characters of [A-Za-z0-9_.:-]")),
    }
}

/// Local IPv4 addresses to connect from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources(pub Vec<Ipv4Addr>);

/// Parses `a.b.c.d-e` (a range of the last octet) or `a.b.c.d,a.b.c.e,...`;
/// the two forms mix: `127.0.0.2-127.0.0.4,127.0.0.9`.
pub fn parse_sources(text: &str) -> Result<Sources, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: Ipv4Addr = first.trim().parse().map_err(|e| format!("{first}: {e}"))?;
                let last_octet = match last.trim().parse::<Ipv4Addr>() {
                    Ok(addr) if addr.octets()[..3] == first.octets()[..3] => addr.octets()[3],
                    Ok(addr) => {
                        return Err(format!(
                            "{first}-{addr}: a range may only vary the last octet"
                        ))
                    }
                    Err(_) => last
                        .trim()
                        .parse::<u8>()
                        .map_err(|e| format!("{last}: {e}"))?,
                };
                let [a, b, c, start] = first.octets();
                if last_octet < start {
                    return Err(format!("{part}: empty range"));
                }
                out.extend((start..=last_octet).map(|d| Ipv4Addr::new(a, b, c, d)));
            }
            None => out.push(part.parse().map_err(|e| format!("{part}: {e}"))?),
        }
    }
    if out.is_empty() {
        return Err("no source address given".into());
    }
    Ok(Sources(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_accept_ranges_lists_and_both() {
        let range = parse_sources("127.0.0.2-127.0.0.9").unwrap();
        assert_eq!(range.0.len(), 8);
        assert_eq!(range.0[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(range.0[7], Ipv4Addr::new(127, 0, 0, 9));
        let short = parse_sources("127.0.0.2-4").unwrap();
        assert_eq!(short.0.len(), 3);
        let list = parse_sources("127.0.0.2,127.0.0.3").unwrap();
        assert_eq!(list.0, vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]);
        assert_eq!(parse_sources("127.0.0.2-3,127.0.0.9").unwrap().0.len(), 3);
    }

    fn parse(args: &[&str]) -> Result<Mode, clap::Error> {
        Cli::try_parse_from(["herald-load"].iter().chain(args)).map(|cli| cli.mode)
    }

    const FANOUT: &[&str] = &[
        "fanout",
        "--rooms",
        "2",
        "--members",
        "5",
        "--publishers",
        "1",
        "--rate",
        "10",
        "--duration-secs",
        "1",
    ];

    #[test]
    fn publishers_connect_to_url_unless_publish_url_is_given() {
        let Mode::Fanout(plain) = parse(FANOUT).unwrap() else {
            panic!("not fanout")
        };
        assert_eq!(plain.publish.publish_url, None);
        assert_eq!(plain.publish.publish_server_pid, None);

        let flags = [
            "--url",
            "ws://127.0.0.1:9002/ws",
            "--server-pid",
            "2",
            "--publish-url",
            "ws://127.0.0.1:9001/ws",
            "--publish-server-pid",
            "1",
        ];
        let Mode::Fanout(split) = parse(&[FANOUT, &flags].concat()).unwrap() else {
            panic!("not fanout")
        };
        assert_eq!(split.common.url, "ws://127.0.0.1:9002/ws");
        assert_eq!(split.common.server_pid, Some(2));
        assert_eq!(
            split.publish.publish_url.as_deref(),
            Some("ws://127.0.0.1:9001/ws")
        );
        assert_eq!(split.publish.publish_server_pid, Some(1));

        let ramp = [
            "ramp",
            "--rooms",
            "2",
            "--members",
            "5",
            "--publishers",
            "1",
            "--start-rate",
            "10",
            "--publish-url",
            "ws://127.0.0.1:9001/ws",
        ];
        let Mode::Ramp(ramp) = parse(&ramp).unwrap() else {
            panic!("not ramp")
        };
        assert_eq!(
            ramp.publish.publish_url.as_deref(),
            Some("ws://127.0.0.1:9001/ws")
        );
    }

    #[test]
    fn publish_server_pid_needs_publish_url() {
        assert!(parse(&[FANOUT, &["--publish-server-pid", "1"]].concat()).is_err());
        assert!(parse(&[
            "idle",
            "--connections",
            "1",
            "--publish-url",
            "ws://127.0.0.1:9001/ws"
        ])
        .is_err());
    }

    #[test]
    fn recover_has_the_storm_defaults() {
        let Mode::Recover(args) = parse(&["recover", "--api-key", "k"]).unwrap() else {
            panic!("not recover")
        };
        assert_eq!(args.clients, 10_000);
        assert_eq!(args.rooms, 100);
        assert_eq!(args.api_key.as_deref(), Some("k"));
        assert_eq!(args.api_url, None);
        assert_eq!(args.publish_via, PublishVia::Api);
        let Mode::Recover(ws) = parse(&["recover", "--publish-via", "ws", "--publish-connections", "4"]).unwrap() else {
            panic!("not recover")
        };
        assert_eq!(ws.publish_via, PublishVia::Ws);
        assert_eq!(ws.publish_connections, 4);
        assert!(args.rate > 0.0 && args.before_secs > 0.0 && args.after_secs > 0.0);
    }

    #[test]
    fn rooms_take_a_prefix_in_fanout_and_ramp() {
        let Mode::Fanout(plain) = parse(FANOUT).unwrap() else {
            panic!("not fanout")
        };
        assert_eq!(plain.shape.room_prefix, "");
        let Mode::Fanout(live) = parse(&[FANOUT, &["--room-prefix", "live."]].concat()).unwrap() else {
            panic!("not fanout")
        };
        assert_eq!(live.shape.room_prefix, "live.");
        let ramp = ["ramp", "--rooms", "1", "--members", "2", "--publishers", "1", "--start-rate", "10", "--room-prefix", "ns:a-b_c."];
        let Mode::Ramp(ramp) = parse(&ramp).unwrap() else {
            panic!("not ramp")
        };
        assert_eq!(ramp.shape.room_prefix, "ns:a-b_c.");
        for bad in ["live/", "a b", "quote\"", "ünï", &"x".repeat(65)] {
            assert!(parse(&[FANOUT, &["--room-prefix", bad]].concat()).is_err(), "{bad}");
        }
        assert!(parse(&["recover", "--room-prefix", "live."]).is_err(), "recover names its own rooms");
    }

    #[test]
    fn idle_takes_a_transport_and_other_modes_do_not() {
        let Mode::Idle(ws) = parse(&["idle", "--connections", "3"]).unwrap() else {
            panic!("not idle")
        };
        assert_eq!(ws.transport, Transport::Websocket);
        let Mode::Idle(polling) =
            parse(&["idle", "--connections", "3", "--dialect", "socketio", "--transport", "polling"]).unwrap()
        else {
            panic!("not idle")
        };
        assert_eq!(polling.transport, Transport::Polling);
        assert!(parse(&[FANOUT, &["--transport", "polling"]].concat()).is_err());
    }

    #[test]
    fn bad_sources_are_refused() {
        assert!(parse_sources("").is_err());
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_sources("127.0.0.2-127.0.1.3").is_err());
        assert!(parse_sources("localhost").is_err());
    }
}
