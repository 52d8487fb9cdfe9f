//! Configuration: one [`Config`] tree read from `config.toml`, then overridden
//! by `HERALD_<SECTION>__<KEY>` environment variables.
//!
//! Every struct denies unknown fields, so a typo in a key stops start-up with
//! a message naming the key instead of silently keeping a default. After
//! deserialising, [`Config::validate`] rejects values that parse but cannot
//! work (a zero queue, a heartbeat timeout shorter than its interval, ...).

pub mod keys;
mod namespaces;

pub use namespaces::{NamespaceConfig, SlowConsumer};

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable holds an unknown key or a value of the wrong type.
    #[error("{}", describe(.0))]
    Parse(Box<figment::Error>),
    /// A value parsed but is out of range or inconsistent with another.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// `--config` named a file that does not exist.
    #[error("config file {0} does not exist")]
    Missing(String),
}

/// The whole configuration. Each section documents its keys with their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub heartbeat: HeartbeatConfig,
    pub api: ApiConfig,
    pub cluster: ClusterConfig,
    pub history: HistoryConfig,
    pub supervision: SupervisionConfig,
    pub debug: DebugConfig,
    pub log: LogConfig,
    pub demo: DemoConfig,
    pub socketio: SocketIoConfig,
    /// `[[namespaces]]`: options for the rooms whose name starts with a
    /// prefix (see [`NamespaceConfig`]). Default: none.
    #[serde(deserialize_with = "namespaces::entries", skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[server]`: where Herald listens and how this node names itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind. Default `"127.0.0.1"`.
    #[serde(deserialize_with = "scalar_string")]
    pub host: String,
    /// TCP port; `0` picks a free one (logged at start-up). Default `8080`.
    pub port: u16,
    /// This node's id, sent in `welcome`; empty generates a random one. Default `""`.
    #[serde(deserialize_with = "scalar_string")]
    pub node_id: String,
    /// HTTP worker threads; `0` means one per CPU core. Default `0`.
    pub workers: usize,
    /// `Origin` values allowed to open WebSockets (exact match ignoring ASCII
    /// case, e.g. `"https://app.example.com"`); empty allows any. Requests without an
    /// `Origin` header (non-browser clients) are always allowed. From the
    /// environment, a JSON array: `HERALD_SERVER__ALLOWED_ORIGINS='["https://a.example"]'`.
    /// Default `[]`.
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
    /// After SIGTERM or SIGINT, how long open connections get to close before
    /// the process exits anyway. Default `10000`.
    pub shutdown_timeout_ms: u64,
    /// How long a client has to send its whole request (head, and body for the
    /// API) once its socket is accepted; a slower one is dropped (408 or a
    /// closed socket). Default `10000`.
    pub handshake_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            node_id: String::new(),
            workers: 0,
            allowed_origins: Vec::new(),
            shutdown_timeout_ms: 10000,
            handshake_timeout_ms: 10000,
        }
    }
}

/// `[auth]`: JWT authentication of connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// When true, a connection must authenticate within `timeout_ms` or is closed
    /// with 4001; when false, it starts as the anonymous user `anon:<conn>`. Default `false`.
    pub required: bool,
    /// HS256 secret that signs client tokens. Default `""` (no token can be verified).
    #[serde(deserialize_with = "scalar_string")]
    pub jwt_secret: String,
    /// How long an unauthenticated connection may wait before sending `auth`. Default `5000`.
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { required: false, jwt_secret: String::new(), timeout_ms: 5000 }
    }
}

/// `[limits]`: per-connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client frame in bytes; a larger one closes the connection with 1009. Default `65536`.
    pub max_message_bytes: usize,
    /// Sustained client frames per second per connection; a frame over the
    /// rate is dropped with `RATE_LIMITED`. Default `10`.
    pub rate_per_sec: u32,
    /// Frames a connection may send at once before the rate applies (the
    /// token bucket's size). Default `20`.
    pub rate_burst: u32,
    /// Consecutive rate-limited frames before a close with 1008. Default `20`.
    pub rate_strikes: u32,
    /// Rooms one connection may be in at once; one more is `TOO_MANY_ROOMS`. Default `100`.
    pub max_rooms_per_conn: usize,
    /// Frames buffered for one connection; one more and it is a slow consumer,
    /// closed with 4008. Default `1024`.
    pub outbound_queue: usize,
    /// Open connections this node accepts, sockets still sending their
    /// request included; past it upgrades get 503. `0` means as many as the
    /// file limit allows, less a reserve that keeps `/healthz`, `/readyz`,
    /// `/metrics` and the API reachable. Default `0`.
    pub max_connections: usize,
    /// Bytes buffered for one connection; past it, as past `outbound_queue`
    /// frames, it is a slow consumer. Default `1048576` (1 MiB).
    pub outbound_queue_bytes: usize,
    /// Rooms this node holds at once (those with members here); a join that
    /// would create one more is `TOO_MANY_ROOMS`. Default `1000000`.
    pub max_rooms: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 65536,
            rate_per_sec: 10,
            rate_burst: 20,
            rate_strikes: 20,
            max_rooms_per_conn: 100,
            outbound_queue: 1024,
            max_connections: 0,
            outbound_queue_bytes: 1 << 20,
            max_rooms: 1_000_000,
        }
    }
}

/// `[heartbeat]`: WebSocket-level liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Interval between server pings; also sent to clients as `heartbeat_ms`. Default `25000`.
    pub interval_ms: u64,
    /// A connection silent (no frame, no pong) this long is terminated. Default `60000`.
    pub timeout_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self { interval_ms: 25000, timeout_ms: 60000 }
    }
}

/// `[api]`: the server-side HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer key for `/api/*` (`Authorization: Bearer <key>`); empty answers
    /// 403 to every API call, so the API is off unless configured. Default `""`.
    #[serde(deserialize_with = "scalar_string")]
    pub key: String,
}

/// `[supervision]`: how often a supervisor restarts its children before it
/// gives up and escalates to its own parent (the root stops the process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed per supervisor within `window_ms`; one more
    /// escalates. Default `5`.
    pub max_restarts: u32,
    /// The sliding window of `max_restarts`. Default `10000`.
    pub window_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self { max_restarts: 5, window_ms: 10_000 }
    }
}

/// `[debug]`: drills for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Mounts `POST /api/debug/crash`, which makes a chosen actor panic.
    /// Default `false`: the route does not exist.
    pub fault_injection: bool,
}

/// `[demo]`: the browser chat demo (`examples/chat/`) and the JavaScript
/// client (`clients/js/src/`), served from a checkout of the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serves the demo at `/demo/`, the client at `/demo/client/`, and
    /// `POST /demo/token`, which signs a token for any name: for trying
    /// Herald out, never for production. Default `false`.
    pub enabled: bool,
    /// The repository checkout the files are read from (relative to the
    /// working directory). Default `"."`.
    #[serde(deserialize_with = "scalar_string")]
    pub root: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: false, root: ".".into() }
    }
}

/// `[socketio]`: Engine.IO 4 / Socket.IO 5 at `/socket.io/`, for clients
/// built on the official `socket.io-client` (see `crate::socketio`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Serves `/socket.io/` (WebSocket, HTTP long polling and the upgrade
    /// from one to the other). Default `true`.
    pub enabled: bool,
    /// How long a Socket.IO session's rooms and position are kept after
    /// its connection ends, for the client to recover them (connection
    /// state recovery). Default 120000 (two minutes, Socket.IO's own).
    pub recovery_ms: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self { enabled: true, recovery_ms: 120_000 }
    }
}

/// `[log]`: what the server writes to stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"`: one human-readable line per event; `"json"`: one JSON
    /// object per line, for log pipelines. Default `"text"`.
    pub format: LogFormat,
    /// The least severe level written (`off`, `error`, `warn`, `info`,
    /// `debug`, `trace`), or a filter of a level and `target=level` directives
    /// such as `"info,herald::cluster=debug"`; anything else stops start-up
    /// (see [`check_log_level`]). The `RUST_LOG` environment variable, when
    /// set, takes its place. Default `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// How log lines are written: the values of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[cluster]`: relaying between nodes through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Relay rooms, direct messages and presence through Redis. Default `false`.
    pub enabled: bool,
    /// Redis to relay through. Default `"redis://127.0.0.1:6379"`.
    #[serde(deserialize_with = "scalar_string")]
    pub redis_url: String,
    /// A node silent this long is dead and its presence dropped. Default `15000`.
    pub node_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { enabled: false, redis_url: "redis://127.0.0.1:6379".into(), node_ttl_ms: 15000 }
    }
}

/// `[history]`: what each room keeps of its messages, for clients that
/// come back after a disconnect (`join` with `since`, SSE `Last-Event-ID`,
/// `GET /api/rooms/{room}/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Messages kept per room; 0 keeps none. Default `100`.
    pub size: usize,
    /// A room's history is dropped this long after its last publish. Default `300000`.
    pub ttl_ms: u64,
    /// Single node: every room's history together stays under this many
    /// bytes, the oldest messages going first. Default `67108864` (64 MiB).
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { size: 100, ttl_ms: 300_000, max_bytes: 64 << 20 }
    }
}

/// Reads a string key leniently: an environment override such as
/// `HERALD_AUTH__JWT_SECRET=12345` arrives as a number, and is still meant as text.
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i128),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Integer(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
}

/// Reads a list of strings, and says what a list looks like when given one
/// string: from the environment, a list must be written as a JSON array, and
/// a bare `HERALD_SERVER__ALLOWED_ORIGINS=https://a.example` arrives as text.
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct List;
    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(LIST_EXPECTED)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut list = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                list.push(item);
            }
            Ok(list)
        }
    }
    d.deserialize_any(List)
}

/// What [`string_list`] asks for.
const LIST_EXPECTED: &str = "a JSON array of strings, such as [\"https://a.example.com\", \"https://b.example.com\"]";

/// Checks `log.level` the way the log filter reads it: each comma-separated
/// directive must be a level or `target=level`. The filter itself reads a
/// word without `=` that names no level as a target to log at every level,
/// so `"loud"` would log nothing at all and `"herald"` every event of
/// Herald; here a target needs its `=level`.
fn check_log_level(level: &str) -> Result<(), String> {
    use tracing_subscriber::filter::LevelFilter;
    const ACCEPTED: &str =
        "use off, error, warn, info, debug or trace, or a filter of target=level directives such as \"info,herald::cluster=debug\"";
    if level.trim().is_empty() {
        return Err(format!("it is empty: {ACCEPTED}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[']) && directive.parse::<LevelFilter>().is_err() {
            let what = match directive == level.trim() {
                true => format!("{directive:?} is not a level"),
                false => format!("{directive:?} in {level:?} is not a level"),
            };
            return Err(format!("{what}: {ACCEPTED} (to log every level of a target, write \"{directive}=trace\")"));
        }
    }
    match tracing_subscriber::EnvFilter::builder().parse(level) {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("{level:?} is not a log filter ({error}): {ACCEPTED}")),
    }
}

/// One line per problem, each naming the key (`server.port`) and where its
/// value came from (the file or the environment variable).
fn describe(error: &figment::Error) -> String {
    let lines: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| {
            // Figment prefixes paths with its profile name ("default").
            let path: Vec<&str> = e.path.iter().map(String::as_str).skip_while(|p| *p == "default").collect();
            let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            match path.is_empty() {
                true => format!("{}{source}", e.kind),
                false => format!("`{}`: {}{source}", path.join("."), e.kind),
            }
        })
        .collect();
    lines.join("; ")
}

/// Prefix of environment overrides: `HERALD_SERVER__PORT=9001` sets `server.port`.
const ENV_PREFIX: &str = "HERALD_";

impl Config {
    /// Reads `path` (which may be absent only when `required` is false), applies
    /// `HERALD_*` overrides from the process environment, and validates the result.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment), then validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that deserialise but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid { key, reason: reason.into() }
        }
        let node = &self.server.node_id;
        if node.len() > 64 || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Err(invalid("server.node_id", "use at most 64 characters of [A-Za-z0-9_.-]"));
        }
        if self.server.host.is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if let Some(origin) = self.server.allowed_origins.iter().find(|o| o.is_empty() || o.ends_with('/')) {
            return Err(invalid("server.allowed_origins", format!("{origin:?} is not an origin like \"https://example.com\"")));
        }
        if self.supervision.window_ms == 0 {
            return Err(invalid("supervision.window_ms", "must be greater than 0"));
        }
        if self.server.shutdown_timeout_ms == 0 {
            return Err(invalid("server.shutdown_timeout_ms", "must be greater than 0"));
        }
        if self.server.handshake_timeout_ms == 0 {
            return Err(invalid("server.handshake_timeout_ms", "must be greater than 0"));
        }
        if self.auth.required && self.auth.jwt_secret.is_empty() {
            return Err(invalid("auth.jwt_secret", "must be set when auth.required = true"));
        }
        if self.auth.timeout_ms == 0 {
            return Err(invalid("auth.timeout_ms", "must be greater than 0"));
        }
        let limits = &self.limits;
        if limits.max_message_bytes < 64 {
            return Err(invalid("limits.max_message_bytes", "must be at least 64"));
        }
        if limits.rate_per_sec == 0 {
            return Err(invalid("limits.rate_per_sec", "must be greater than 0"));
        }
        if limits.rate_burst == 0 {
            return Err(invalid("limits.rate_burst", "must be greater than 0"));
        }
        if limits.rate_strikes == 0 {
            return Err(invalid("limits.rate_strikes", "must be greater than 0"));
        }
        if limits.max_rooms_per_conn == 0 {
            return Err(invalid("limits.max_rooms_per_conn", "must be greater than 0"));
        }
        if limits.max_rooms == 0 {
            return Err(invalid("limits.max_rooms", "must be greater than 0"));
        }
        if limits.outbound_queue == 0 {
            return Err(invalid("limits.outbound_queue", "must be greater than 0"));
        }
        if limits.outbound_queue_bytes == 0 {
            return Err(invalid("limits.outbound_queue_bytes", "must be greater than 0"));
        }
        if self.heartbeat.interval_ms == 0 {
            return Err(invalid("heartbeat.interval_ms", "must be greater than 0"));
        }
        if self.heartbeat.timeout_ms <= self.heartbeat.interval_ms {
            return Err(invalid("heartbeat.timeout_ms", "must be greater than heartbeat.interval_ms"));
        }
        if !self.cluster.redis_url.starts_with("redis://") && !self.cluster.redis_url.starts_with("rediss://") {
            return Err(invalid("cluster.redis_url", "must start with redis:// or rediss://"));
        }
        if self.history.size > 100_000 {
            return Err(invalid("history.size", "must be at most 100000"));
        }
        if self.history.size > 0 && self.history.ttl_ms == 0 {
            return Err(invalid("history.ttl_ms", "must be at least 1 while history.size is not 0"));
        }
        if self.socketio.recovery_ms > 86_400_000 {
            return Err(invalid("socketio.recovery_ms", "must be at most 86400000 (a day)"));
        }
        if self.cluster.node_ttl_ms < 1000 {
            return Err(invalid("cluster.node_ttl_ms", "must be at least 1000"));
        }
        check_log_level(&self.log.level).map_err(|reason| invalid("log.level", reason))?;
        namespaces::validate(&self.namespaces, &self.history)

    }
}

#[cfg(test)]
mod tests;
