//! Prometheus metrics: one registry per server, every series named
//! `herald_<subsystem>_<name>` in base units (`_seconds`, `_bytes`), counters
//! ending in `_total`, labels from small fixed sets (never a room or a user).
//!
//! Labelled children are resolved once at start-up into arrays indexed by
//! their label's enum, so the hot path is a relaxed atomic add with no
//! hashing and no lock. What is cheaper to read than to track (the deepest
//! outbound queue, whether Redis is up) is sampled when `/metrics` is
//! scraped, by the `/metrics` route.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::protocol::{ClientKind, ServerKind};
use crate::config::SlowConsumer;

mod labels;

pub use labels::*;

/// Buckets of latencies inside one node: 50 µs to 1 s.
const LOCAL_BUCKETS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Buckets of latencies through Redis or over HTTP: 100 µs to 2.5 s.
const NETWORK_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    /// `herald_build_info{version,node}`: always 1; names the node behind an instance.
    build_info: IntGaugeVec,
    /// `herald_connections_open{transport}`.
    connections_open: Vec<IntGauge>,
    /// `herald_connections_accepted_total{transport}`.
    connections_accepted: Vec<IntCounter>,
    /// `herald_connections_refused_total{reason}`, by [`Refusal`].
    refused: Vec<IntCounter>,
    /// `herald_joins_refused_total{reason}`, by [`JoinRefusal`].
    joins_refused: Vec<IntCounter>,
    /// `herald_connections_closed_total{code}`: [`CLOSE_CODES`], then `other`.
    closed: Vec<IntCounter>,
    /// `herald_connections_dropped_total{reason}`, by [`Fault`].
    dropped: Vec<IntCounter>,
    /// `herald_connections_accept_errors_total`: failed `accept` calls (e.g. out of file descriptors).
    pub accept_errors: IntCounter,
    /// `herald_connections_queue_depth_max`: the longest outbound queue of any connection, sampled at scrape.
    pub queue_depth_max: IntGauge,
    frames_in: Vec<IntCounter>,
    frames_out: Vec<IntCounter>,
    /// `herald_frames_dropped_total{reason}`, by [`Fault::FRAME`].
    frames_dropped: Vec<IntCounter>,
    /// `herald_slow_consumer_drops_total{policy}`, by [`SlowConsumer`].
    slow_drops: Vec<IntCounter>,
    /// `herald_slow_consumer_latest_replaced_total`: messages waiting in a
    /// `latest` slot that a newer one replaced.
    pub latest_replaced: IntCounter,
    bytes_in: Vec<IntCounter>,
    bytes_out: Vec<IntCounter>,
    /// `herald_rooms_active`: rooms alive on this node (rooms with local members).
    pub rooms: IntGauge,
    /// `herald_rooms_memberships`: (connection, room) pairs on this node.
    pub memberships: IntGauge,
    /// `herald_users_online`: distinct users with a connection on this node.
    pub users_online: IntGauge,
    published: Vec<IntCounter>,
    /// `herald_messages_delivered_total`: `message` frames rooms queued to their members.
    pub delivered: IntCounter,
    /// `herald_messages_publish_latency_seconds`: from a publish reaching the server to its
    /// room having queued it to every local member.
    pub publish_latency: Histogram,
    actor_failures: Vec<IntCounter>,
    actor_restarts: Vec<IntCounter>,
    mailbox_backlog: Vec<IntGauge>,
    /// Indexed by `route * StatusClass::ALL.len() + class`.
    api_requests: Vec<IntCounter>,
    api_duration: Vec<Histogram>,
    /// `herald_history_recoveries_total{recovered}`: joins with `since` (and SSE
    /// rooms resumed from `Last-Event-ID`), `[false, true]`.
    recoveries: Vec<IntCounter>,
    /// `herald_history_replayed_total`: messages replayed to recovering clients.
    pub replayed: IntCounter,
    /// `herald_history_bytes`: bytes of history held in memory on this node.
    pub history_bytes: IntGauge,
    /// `herald_history_messages`: messages held in history on this node.
    pub history_messages: IntGauge,
    /// `herald_history_evictions_total{reason}`, by [`Eviction`].
    evictions: Vec<IntCounter>,
    /// `herald_cluster_relayed_total{direction="out"}`: envelopes this node published to the backplane.
    pub relayed_out: IntCounter,
    /// `herald_cluster_relayed_total{direction="in"}`: envelopes from other nodes handled here.
    pub relayed_in: IntCounter,
    /// `herald_cluster_relay_errors_total`: backplane calls that failed (Redis away, timeouts,
    /// unreadable envelopes).
    pub relay_errors: IntCounter,
    /// `herald_cluster_redis_connected`: 1 while the backplane is up (0 without clustering).
    pub redis_connected: IntGauge,
    /// `herald_cluster_nodes_alive`: live nodes in the cluster, this one included.
    pub nodes_alive: IntGauge,
    /// `herald_cluster_relay_latency_seconds`: from publish on the origin node to delivery here.
    pub relay_latency: Histogram,
}

/// Creates metrics and registers each as it is made.
struct Builder(Registry);

impl Builder {
    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        // Names are distinct constants, so registration cannot collide.
        self.0.register(Box::new(collector.clone())).expect("metric names are unique");
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric"))
    }

    /// One counter per value of `label`, in the order of `values`.
    fn counters<'a>(&self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = &'a str>) -> Vec<IntCounter> {
        let vec = self.register(IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"));
        values.into_iter().map(|v| vec.with_label_values(&[v])).collect()
    }

    fn gauges<'a>(&self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = &'a str>) -> Vec<IntGauge> {
        let vec = self.register(IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"));
        values.into_iter().map(|v| vec.with_label_values(&[v])).collect()
    }

    fn histograms<'a>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = &'a str>,
        buckets: &[f64],
    ) -> Vec<Histogram> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let vec = self.register(HistogramVec::new(opts, &[label]).expect("valid metric"));
        values.into_iter().map(|v| vec.with_label_values(&[v])).collect()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let b = Builder(Registry::new());
        let transports = || TransportKind::ALL.iter().map(|t| t.as_str());
        let actors = || ActorKind::ALL.iter().map(|a| a.as_str());
        let codes: Vec<String> = CLOSE_CODES.iter().map(u16::to_string).chain(["other".into()]).collect();
        let build_info = b.register(
            IntGaugeVec::new(Opts::new("herald_build_info", "Always 1: the version and node id of this server"), &[
                "version", "node",
            ])
            .expect("valid metric"),
        );
        let api_vec = b.register(
            IntCounterVec::new(
                Opts::new("herald_api_requests_total", "Server API requests, by route template and status class"),
                &["route", "status"],
            )
            .expect("valid metric"),
        );
        let api_requests = ApiRoute::ALL
            .iter()
            .flat_map(|r| StatusClass::ALL.iter().map(|c| api_vec.with_label_values(&[r.as_str(), c.as_str()])))
            .collect();
        let relayed = b.counters(
            "herald_cluster_relayed_total",
            "Envelopes relayed through the cluster backplane, by direction (out: published here; in: from other nodes)",
            "direction",
            ["out", "in"],
        );
        let process = prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, "herald");
        b.0.register(Box::new(process)).expect("metric names are unique");
        Self {
            build_info,
            connections_open: b.gauges("herald_connections_open", "Connections open now, by transport", "transport", transports()),
            connections_accepted: b.counters(
                "herald_connections_accepted_total",
                "Connections accepted, by transport",
                "transport",
                transports(),
            ),
            refused: b.counters(
                "herald_connections_refused_total",
                "Connections refused before they opened, by reason",
                "reason",
                Refusal::ALL.iter().map(|r| r.as_str()),
            ),
            joins_refused: b.counters(
                "herald_joins_refused_total",
                "Joins refused, by reason",
                "reason",
                JoinRefusal::ALL.iter().map(|r| r.as_str()),
            ),
            closed: b.counters(
                "herald_connections_closed_total",
                "Connections ended, by close code (1006: ended without one)",
                "code",
                codes.iter().map(String::as_str),
            ),
            dropped: b.counters(
                "herald_connections_dropped_total",
                "Connections the server ended for what their client did or did not do, by reason",
                "reason",
                Fault::ALL.iter().map(|f| f.as_str()),
            ),
            accept_errors: b.counter("herald_connections_accept_errors_total", "Failed accept calls on the listening socket"),
            queue_depth_max: b.gauge(
                "herald_connections_queue_depth_max",
                "Frames waiting in the longest outbound queue of any connection",
            ),
            frames_in: b.counters(
                "herald_frames_received_total",
                "Client frames received, by frame type",
                "type",
                ClientKind::ALL.iter().map(|k| k.as_str()),
            ),
            frames_out: b.counters(
                "herald_frames_sent_total",
                "Server frames written to clients, by frame type",
                "type",
                ServerKind::ALL.iter().map(|k| k.as_str()),
            ),
            frames_dropped: b.counters(
                "herald_frames_dropped_total",
                "Frames refused from clients or not queued to them, by reason",
                "reason",
                Fault::FRAME.iter().map(|f| f.as_str()),
            ),
            slow_drops: b.counters(
                "herald_slow_consumer_drops_total",
                "Frames not queued to a connection whose queue was full, by the slow_consumer policy of their room \
                 (disconnect: also frames of no room)",
                "policy",
                SlowConsumer::ALL.iter().map(|p| p.as_str()),
            ),
            latest_replaced: b.counter(
                "herald_slow_consumer_latest_replaced_total",
                "Messages waiting in a latest room's slot for a slow connection that a newer message replaced",
            ),
            bytes_in: b.counters(
                "herald_transport_received_bytes_total",
                "Bytes of client messages received, by transport (framing not included)",
                "transport",
                transports(),
            ),
            bytes_out: b.counters(
                "herald_transport_sent_bytes_total",
                "Bytes of frames written to clients, by transport (framing not included)",
                "transport",
                transports(),
            ),
            recoveries: b.counters(
                "herald_history_recoveries_total",
                "Joins that asked for missed messages (join with since, SSE Last-Event-ID), by whether they were recovered",
                "recovered",
                ["false", "true"],
            ),
            replayed: b.counter("herald_history_replayed_total", "Messages replayed from history to recovering clients"),
            history_bytes: b.gauge("herald_history_bytes", "Bytes of room history held in memory on this node"),
            history_messages: b.gauge("herald_history_messages", "Messages held in room history in memory on this node"),
            evictions: b.counters(
                "herald_history_evictions_total",
                "Messages dropped from room history, by reason",
                "reason",
                Eviction::ALL.iter().map(|e| e.as_str()),
            ),
            rooms: b.gauge("herald_rooms_active", "Rooms with members on this node"),
            memberships: b.gauge("herald_rooms_memberships", "Room memberships of this node's connections"),
            users_online: b.gauge("herald_users_online", "Distinct users with a connection on this node"),
            published: b.counters(
                "herald_messages_published_total",
                "Messages published on this node, by source",
                "source",
                Source::ALL.iter().map(|s| s.as_str()),
            ),
            delivered: b.counter("herald_messages_delivered_total", "Message frames queued to room members (fan-out)"),
            publish_latency: b.histogram(
                "herald_messages_publish_latency_seconds",
                "Time from a publish reaching the server to its room having queued it to every local member",
                &LOCAL_BUCKETS,
            ),
            actor_failures: b.counters(
                "herald_actor_failures_total",
                "Actors that panicked or failed, by kind",
                "actor",
                actors(),
            ),
            actor_restarts: b.counters(
                "herald_actor_restarts_total",
                "Actors restarted by their supervisor, by kind",
                "actor",
                actors(),
            ),
            mailbox_backlog: b.gauges(
                "herald_actor_mailbox_backlog",
                "Messages waiting in actor mailboxes, by kind (connection: frames in outbound queues)",
                "actor",
                actors(),
            ),
            api_requests,
            api_duration: b.histograms(
                "herald_api_request_duration_seconds",
                "Time to answer a server API request, by route template",
                "route",
                ApiRoute::ALL.iter().map(|r| r.as_str()),
                &NETWORK_BUCKETS,
            ),
            relayed_out: relayed[0].clone(),
            relayed_in: relayed[1].clone(),
            relay_errors: b.counter("herald_cluster_relay_errors_total", "Cluster backplane calls that failed"),
            redis_connected: b.gauge("herald_cluster_redis_connected", "1 while the cluster backplane (Redis) is connected"),
            nodes_alive: b.gauge("herald_cluster_nodes_alive", "Live nodes in the cluster, this one included"),
            relay_latency: b.histogram(
                "herald_cluster_relay_latency_seconds",
                "Time from publish on the origin node to delivery on this node",
                &NETWORK_BUCKETS,
            ),
            registry: b.0,
        }
    }

    /// Sets `herald_build_info` for the node this registry belongs to.
    pub fn set_node(&self, node: &str) {
        self.build_info.reset();
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), node]).set(1);
    }

    /// The open-connections gauge of one transport.
    pub fn connections_open(&self, kind: TransportKind) -> &IntGauge {
        &self.connections_open[kind as usize]
    }

    /// Counts one accepted connection.
    pub fn connection_accepted(&self, kind: TransportKind) {
        self.connections_accepted[kind as usize].inc();
    }

    /// Counts one join with `since`, recovered or not.
    pub fn recovery(&self, recovered: bool) {
        self.recoveries[recovered as usize].inc();
    }

    /// Counts `messages` dropped from history for `reason`.
    pub fn evicted(&self, reason: Eviction, messages: u64) {
        if messages > 0 {
            self.evictions[reason as usize].inc_by(messages);
        }
    }

    /// Counts one refused join.
    pub fn join_refused(&self, reason: JoinRefusal) {
        self.joins_refused[reason as usize].inc();
    }

    /// Counts one refused upgrade.
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].inc();
    }

    /// Counts one ended connection by its close code.
    pub fn connection_closed(&self, code: u16) {
        let index = CLOSE_CODES.iter().position(|&c| c == code).unwrap_or(CLOSE_CODES.len());
        self.closed[index].inc();
    }

    /// Counts one connection ended for `fault`.
    pub fn connection_dropped(&self, fault: Fault) {
        self.dropped[fault as usize].inc();
    }

    /// Connections ended for `fault` so far.
    pub fn connections_dropped(&self, fault: Fault) -> u64 {
        self.dropped[fault as usize].get()
    }

    /// Counts `n` frames dropped for `fault`, one of [`Fault::FRAME`].
    pub fn frames_dropped(&self, fault: Fault, n: u64) {
        if let Some(index) = Fault::FRAME.iter().position(|&f| f == fault) {
            self.frames_dropped[index].inc_by(n);
        }
    }

    /// Counts `n` frames not queued to a full connection under `policy`
    /// (also in `herald_frames_dropped_total{reason="slow_consumer"}`).
    pub fn slow_consumer_drops(&self, policy: SlowConsumer, n: u64) {
        self.slow_drops[policy as usize].inc_by(n);
        self.frames_dropped(Fault::SlowConsumer, n);
    }

    /// Frames dropped under `policy` so far.
    pub fn slow_consumer_dropped(&self, policy: SlowConsumer) -> u64 {
        self.slow_drops[policy as usize].get()
    }

    /// Counts one failed actor.
    pub fn actor_failed(&self, kind: ActorKind) {
        self.actor_failures[kind as usize].inc();
    }

    /// Counts one actor restarted by its supervisor.
    pub fn actor_restarted(&self, kind: ActorKind) {
        self.actor_restarts[kind as usize].inc();
    }

    /// The mailbox backlog gauge of one kind of actor.
    pub fn mailbox_backlog(&self, kind: ActorKind) -> &IntGauge {
        &self.mailbox_backlog[kind as usize]
    }

    /// Counts one received client frame of `bytes` bytes.
    pub fn frame_in(&self, kind: ClientKind, transport: TransportKind, bytes: usize) {
        self.frames_in[kind as usize].inc();
        self.bytes_in[transport as usize].inc_by(bytes as u64);
    }

    /// Counts `n` sent server frames of one kind.
    pub fn frames_out(&self, kind: ServerKind, n: u64) {
        self.frames_out[kind as usize].inc_by(n);
    }

    /// Counts `bytes` written to a client of `transport`.
    pub fn bytes_out(&self, transport: TransportKind, bytes: usize) {
        self.bytes_out[transport as usize].inc_by(bytes as u64);
    }

    /// Counts one published message.
    pub fn published(&self, source: Source) {
        self.published[source as usize].inc();
    }

    /// Counts one answered server API request.
    pub fn api_request(&self, route: ApiRoute, status: u16, took: Duration) {
        self.api_requests[route as usize * StatusClass::ALL.len() + StatusClass::of(status) as usize].inc();
        self.api_duration[route as usize].observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric names, which are constants here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frames_by_kind() {
        let m = Metrics::new();
        m.frame_in(ClientKind::Publish, TransportKind::WebSocket, 42);
        m.frames_out(ServerKind::Message, 3);
        m.frames_out(ServerKind::Error, 1);
        let text = m.render();
        assert!(text.contains(r#"herald_frames_received_total{type="publish"} 1"#), "{text}");
        assert!(text.contains(r#"herald_frames_sent_total{type="message"} 3"#), "{text}");
        assert!(text.contains(r#"herald_frames_sent_total{type="error"} 1"#), "{text}");
        assert!(text.contains(r#"herald_connections_open{transport="ws"} 0"#), "{text}");
        m.connections_open(TransportKind::Sse).inc();
        m.connection_accepted(TransportKind::Sse);
        let text = m.render();
        assert!(text.contains(r#"herald_connections_open{transport="sse"} 1"#), "{text}");
        assert!(text.contains(r#"herald_connections_accepted_total{transport="sse"} 1"#), "{text}");
        m.api_request(ApiRoute::RoomPresence, 200, Duration::from_millis(3));
        m.api_request(ApiRoute::Other, 404, Duration::ZERO);
        let text = m.render();
        assert!(text.contains(r#"herald_api_requests_total{route="/api/rooms/{room}/presence",status="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"herald_api_requests_total{route="other",status="4xx"} 1"#), "{text}");
        assert!(text.contains(r#"herald_api_request_duration_seconds_count{route="/api/rooms/{room}/presence"} 1"#), "{text}");
        assert!(text.contains("herald_process_resident_memory_bytes"), "{text}");
        assert!(text.contains(r#"herald_transport_received_bytes_total{transport="ws"} 42"#), "{text}");
    }

    #[test]
    fn closes_count_by_code_and_drops_by_reason() {
        let m = Metrics::new();
        m.connection_closed(4008);
        m.connection_closed(1006);
        m.connection_closed(3999);
        m.connection_dropped(Fault::Heartbeat);
        m.frames_dropped(Fault::SlowConsumer, 5);
        m.frames_dropped(Fault::Heartbeat, 1);
        m.set_node("n1");
        let text = m.render();
        for series in [
            r#"herald_connections_closed_total{code="4008"} 1"#,
            r#"herald_connections_closed_total{code="1006"} 1"#,
            r#"herald_connections_closed_total{code="other"} 1"#,
            r#"herald_connections_closed_total{code="1000"} 0"#,
            r#"herald_connections_dropped_total{reason="heartbeat"} 1"#,
            r#"herald_frames_dropped_total{reason="slow_consumer"} 5"#,
            r#"herald_frames_dropped_total{reason="rate_limit"} 0"#,
            r#"herald_actor_mailbox_backlog{actor="room"} 0"#,
            r#"node="n1""#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        assert!(!text.contains(r#"herald_frames_dropped_total{reason="heartbeat"}"#), "{text}");
    }
}
