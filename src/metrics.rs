//! Prometheus metrics: one registry per server, every series named
//! `herald_<subsystem>_<name>`.
//!
//! Labelled children are resolved once at start-up into arrays indexed by the
//! frame kind, so the hot path is a relaxed atomic add with no hashing and no
//! lock. Label values come from the fixed sets in [`crate::protocol`].

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::ApiRoute;
use crate::protocol::{ClientKind, ServerKind};
use crate::transport::TransportKind;

/// Why a connection was refused before it opened: the `reason` label of `herald_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached (503).
    MaxConnections,
    /// `Origin` not in `server.allowed_origins` (403).
    Origin,
    /// The node is draining for shutdown (503).
    Draining,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Self::MaxConnections, Self::Origin, Self::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::Origin => "origin",
            Self::Draining => "draining",
        }
    }
}

/// A kind of actor: the `actor` label of `herald_actor_failures_total` and
/// `herald_actor_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Room,
    /// A room registry shard.
    Registry,
    Presence,
    Connection,
    /// The cluster link.
    Cluster,
}

impl ActorKind {
    pub const ALL: [ActorKind; 5] = [Self::Room, Self::Registry, Self::Presence, Self::Connection, Self::Cluster];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Registry => "registry",
            Self::Presence => "presence",
            Self::Connection => "connection",
            Self::Cluster => "cluster",
        }
    }
}

/// An HTTP status reduced to its class: the `status` label of `herald_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 3] = [Self::Success, Self::ClientError, Self::ServerError];

    /// The class of `status`; informational and redirect codes, which the API
    /// never answers, count as success.
    pub fn of(status: u16) -> Self {
        match status {
            500.. => Self::ServerError,
            400..=499 => Self::ClientError,
            _ => Self::Success,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    /// `herald_connections_open{transport}`, indexed by [`TransportKind`].
    connections_open: Vec<IntGauge>,
    /// `herald_connections_accepted_total{transport}`, indexed by [`TransportKind`].
    connections_accepted: Vec<IntCounter>,
    /// `herald_rooms`: room actors alive on this node (rooms with local members).
    pub rooms: IntGauge,
    /// `herald_slow_consumers_total`: connections closed (4008) because their queue was full.
    pub slow_consumers: IntCounter,
    /// `herald_rate_limited_frames_total`: client frames refused with `RATE_LIMITED`.
    pub rate_limited: IntCounter,
    /// `herald_rate_limit_closes_total`: connections closed (1008) after too many rate-limited frames.
    pub rate_limit_closes: IntCounter,
    /// `herald_oversized_frames_total`: client messages over `max_message_bytes` (close 1009).
    pub oversized: IntCounter,
    /// `herald_heartbeat_timeouts_total`: connections dropped for silence.
    pub heartbeat_timeouts: IntCounter,
    /// `herald_accept_errors_total`: failed `accept` calls (e.g. out of file descriptors).
    pub accept_errors: IntCounter,
    refused: Vec<IntCounter>,
    actor_failures: Vec<IntCounter>,
    actor_restarts: Vec<IntCounter>,
    frames_in: Vec<IntCounter>,
    frames_out: Vec<IntCounter>,
    /// Indexed by `route * StatusClass::ALL.len() + class`.
    api_requests: Vec<IntCounter>,
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

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let open_vec = IntGaugeVec::new(
            Opts::new("herald_connections_open", "Connections currently open, by transport"),
            &["transport"],
        )
        .unwrap();
        let counter_vec =
            |name: &str, help: &str, label: &str| IntCounterVec::new(Opts::new(name, help), &[label]).unwrap();
        let children = |vec: &IntCounterVec, values: &mut dyn Iterator<Item = &'static str>| -> Vec<IntCounter> {
            values.map(|v| vec.with_label_values(&[v])).collect()
        };
        let accepted_vec =
            counter_vec("herald_connections_accepted_total", "Connections accepted, by transport", "transport");
        let connections_open = TransportKind::ALL.iter().map(|t| open_vec.with_label_values(&[t.as_str()])).collect();
        let connections_accepted = children(&accepted_vec, &mut TransportKind::ALL.iter().map(|t| t.as_str()));
        let rooms = IntGauge::new("herald_rooms", "Rooms with members on this node").unwrap();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        let slow_consumers =
            counter("herald_slow_consumers_total", "Connections closed because their outbound queue was full");
        let rate_limited = counter("herald_rate_limited_frames_total", "Client frames refused with RATE_LIMITED");
        let rate_limit_closes =
            counter("herald_rate_limit_closes_total", "Connections closed after too many rate-limited frames");
        let oversized = counter("herald_oversized_frames_total", "Client messages larger than max_message_bytes");
        let heartbeat_timeouts = counter("herald_heartbeat_timeouts_total", "Connections dropped for silence");
        let accept_errors = counter("herald_accept_errors_total", "Failed accept calls on the listening socket");
        let refused_vec =
            counter_vec("herald_connections_refused_total", "Connections refused before they opened, by reason", "reason");
        let refused = children(&refused_vec, &mut Refusal::ALL.iter().map(|r| r.as_str()));
        let failures_vec = counter_vec("herald_actor_failures_total", "Actors that panicked or failed, by kind", "actor");
        let restarts_vec =
            counter_vec("herald_actor_restarts_total", "Actors restarted by their supervisor, by kind", "actor");
        let actor_failures = children(&failures_vec, &mut ActorKind::ALL.iter().map(|a| a.as_str()));
        let actor_restarts = children(&restarts_vec, &mut ActorKind::ALL.iter().map(|a| a.as_str()));
        let frames_in_vec = counter_vec("herald_frames_received_total", "Client frames received, by frame type", "type");
        let frames_out_vec = counter_vec("herald_frames_sent_total", "Server frames sent, by frame type", "type");
        let frames_in = children(&frames_in_vec, &mut ClientKind::ALL.iter().map(|k| k.as_str()));
        let frames_out = children(&frames_out_vec, &mut ServerKind::ALL.iter().map(|k| k.as_str()));
        let api_vec = IntCounterVec::new(
            Opts::new("herald_api_requests_total", "Server API requests, by route template and status class"),
            &["route", "status"],
        )
        .unwrap();
        let api_requests = ApiRoute::ALL
            .iter()
            .flat_map(|r| StatusClass::ALL.iter().map(|c| api_vec.with_label_values(&[r.as_str(), c.as_str()])))
            .collect();
        let relayed_vec = counter_vec(
            "herald_cluster_relayed_total",
            "Envelopes relayed through the cluster backplane, by direction (out: published here; in: from other nodes)",
            "direction",
        );
        let relayed_out = relayed_vec.with_label_values(&["out"]);
        let relayed_in = relayed_vec.with_label_values(&["in"]);
        let relay_errors = counter("herald_cluster_relay_errors_total", "Cluster backplane calls that failed");
        let redis_connected =
            IntGauge::new("herald_cluster_redis_connected", "1 while the cluster backplane (Redis) is connected")
                .unwrap();
        let nodes_alive =
            IntGauge::new("herald_cluster_nodes_alive", "Live nodes in the cluster, this one included").unwrap();
        let relay_latency = Histogram::with_opts(
            HistogramOpts::new(
                "herald_cluster_relay_latency_seconds",
                "Time from publish on the origin node to delivery on this node",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
        )
        .unwrap();
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(relayed_vec),
            Box::new(relay_errors.clone()),
            Box::new(redis_connected.clone()),
            Box::new(nodes_alive.clone()),
            Box::new(relay_latency.clone()),
            Box::new(open_vec),
            Box::new(accepted_vec),
            Box::new(rooms.clone()),
            Box::new(slow_consumers.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limit_closes.clone()),
            Box::new(oversized.clone()),
            Box::new(heartbeat_timeouts.clone()),
            Box::new(accept_errors.clone()),
            Box::new(refused_vec),
            Box::new(failures_vec),
            Box::new(restarts_vec),
            Box::new(frames_in_vec),
            Box::new(frames_out_vec),
            Box::new(api_vec),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            // Names are distinct constants, so registration cannot collide.
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            connections_open,
            connections_accepted,
            rooms,
            slow_consumers,
            rate_limited,
            rate_limit_closes,
            oversized,
            heartbeat_timeouts,
            accept_errors,
            refused,
            actor_failures,
            actor_restarts,
            frames_in,
            frames_out,
            api_requests,
            relayed_out,
            relayed_in,
            relay_errors,
            redis_connected,
            nodes_alive,
            relay_latency,
        }
    }

    /// The open-connections gauge of one transport.
    pub fn connections_open(&self, kind: TransportKind) -> &IntGauge {
        &self.connections_open[kind as usize]
    }

    /// Counts one accepted connection.
    pub fn connection_accepted(&self, kind: TransportKind) {
        self.connections_accepted[kind as usize].inc();
    }

    /// Counts one refused upgrade.
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].inc();
    }

    /// Counts one failed actor.
    pub fn actor_failed(&self, kind: ActorKind) {
        self.actor_failures[kind as usize].inc();
    }

    /// Counts one actor restarted by its supervisor.
    pub fn actor_restarted(&self, kind: ActorKind) {
        self.actor_restarts[kind as usize].inc();
    }

    /// Counts one received client frame.
    pub fn frame_in(&self, kind: ClientKind) {
        self.frames_in[kind as usize].inc();
    }

    /// Counts `n` sent server frames of one kind.
    pub fn frames_out(&self, kind: ServerKind, n: u64) {
        self.frames_out[kind as usize].inc_by(n);
    }

    /// Counts one answered server API request.
    pub fn api_request(&self, route: ApiRoute, status: u16) {
        self.api_requests[route as usize * StatusClass::ALL.len() + StatusClass::of(status) as usize].inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
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
        m.frame_in(ClientKind::Publish);
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
        m.api_request(ApiRoute::RoomPresence, 200);
        m.api_request(ApiRoute::Other, 404);
        let text = m.render();
        assert!(text.contains(r#"herald_api_requests_total{route="/api/rooms/{room}/presence",status="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"herald_api_requests_total{route="other",status="4xx"} 1"#), "{text}");
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
