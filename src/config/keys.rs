//! What each configuration key means, for `herald --help`.
//!
//! Defaults are not written here: [`reference`] reads them from
//! [`Config::default`], so the help cannot disagree with them, and a test
//! checks that [`KEYS`] names every key of [`Config`] once (and that the
//! table in README.md gives the same keys and defaults).

use super::Config;

/// Every key as `section.key`, in the order `--help` shows them, with what it means.
const KEYS: &[(&str, &str)] = &[
    ("server.host", "Address to listen on."),
    ("server.port", "Port; 0 picks a free one (logged at start-up)."),
    ("server.node_id", "This node's id, sent in welcome; empty generates one. At most 64 of [A-Za-z0-9_.-]."),
    ("server.workers", "HTTP worker threads; 0 is one per CPU core."),
    (
        "server.allowed_origins",
        "Origin values allowed to open WebSockets (exact, ignoring ASCII case, e.g. \"https://app.example.com\"); \
         empty allows any. Requests without Origin (non-browser clients) are always allowed; others get 403. \
         From the environment, a JSON array: HERALD_SERVER__ALLOWED_ORIGINS='[\"https://app.example.com\"]'.",
    ),
    (
        "server.shutdown_timeout_ms",
        "After SIGTERM or SIGINT, how long open connections get to close before the process exits anyway.",
    ),
    (
        "server.handshake_timeout_ms",
        "How long an accepted socket has to send its whole request (an API request: and its body); \
         a slower one gets 408 or is closed.",
    ),
    (
        "auth.required",
        "true: a connection must authenticate within auth.timeout_ms or is closed with 4001; \
         false: unauthenticated connections are the user anon:<conn>.",
    ),
    ("auth.jwt_secret", "HS256 secret that signs client tokens; required when auth.required is true."),
    ("auth.timeout_ms", "How long a connection may take to send its auth frame when auth is required."),
    (
        "limits.max_message_bytes",
        "Largest client message in bytes; a larger one closes the connection with 1009. At least 64.",
    ),
    (
        "limits.rate_per_sec",
        "Sustained client frames per second per connection; a frame over the rate is dropped with RATE_LIMITED.",
    ),
    ("limits.rate_burst", "Frames a connection may send at once before the rate applies (the token bucket's size)."),
    ("limits.rate_strikes", "Consecutive rate-limited frames that close the connection with 1008."),
    ("limits.max_rooms_per_conn", "Rooms one connection may be in at once; one more is TOO_MANY_ROOMS."),
    (
        "limits.max_rooms",
        "Rooms this node holds at once (those with members here); a join that would create one more is \
         TOO_MANY_ROOMS.",
    ),
    (
        "limits.outbound_queue",
        "Frames queued for one connection; one more and it is a slow consumer, closed with 4008.",
    ),
    (
        "limits.max_connections",
        "Open connections this node accepts (WebSocket and SSE, sockets still sending their request \
         included); past it upgrades get 503. 0: what the file limit allows, less a reserve for \
         /healthz, /readyz, /metrics and the API.",
    ),
    (
        "limits.outbound_queue_bytes",
        "Bytes queued for one connection; past it, as past outbound_queue frames, it is a slow consumer.",
    ),
    ("heartbeat.interval_ms", "Interval between server pings; also sent to clients as heartbeat_ms."),
    (
        "heartbeat.timeout_ms",
        "A connection silent this long (no frame, no pong) is closed; must exceed heartbeat.interval_ms. \
         Also the sockets' TCP_USER_TIMEOUT.",
    ),
    ("api.key", "Bearer key of the server API (Authorization: Bearer <key>); empty: every /api call answers 403."),
    (
        "cluster.enabled",
        "Relay rooms, direct messages, broadcasts and presence through Redis; false never touches Redis.",
    ),
    ("cluster.redis_url", "Redis of the cluster: redis:// or rediss://, optionally with /db."),
    (
        "cluster.node_ttl_ms",
        "A node silent this long is dead: the others drop its users (with user_left). At least 1000.",
    ),
    (
        "history.size",
        "Messages each room keeps for clients that reconnect (join with since, SSE Last-Event-ID, the history \
         API); 0 keeps none. At most 100000.",
    ),
    ("history.ttl_ms", "A room's history is dropped this long after its last publish (in Redis too, with clustering)."),
    (
        "history.max_bytes",
        "Single node: all rooms' history together stays under this many bytes; past it the oldest messages go \
         first. With clustering, history lives in Redis and history.size and history.ttl_ms bound it.",
    ),
    (
        "supervision.max_restarts",
        "Restarts a supervisor makes within supervision.window_ms; one more failure escalates to its \
         parent, and past the root's limit the process exits with status 70.",
    ),
    ("supervision.window_ms", "The sliding window of supervision.max_restarts."),
    (
        "demo.enabled",
        "true serves the browser chat demo at /demo/ and the JavaScript client at /demo/client/, and POST /demo/token \
         signs a token for any name (with a per-process key when auth.jwt_secret is empty). For trying Herald out only.",
    ),
    ("demo.root", "The repository checkout the demo's files are read from (examples/chat, clients/js/src)."),
    (
        "socketio.enabled",
        "true serves Engine.IO 4 / Socket.IO 5 at /socket.io/ (WebSocket, HTTP long polling and the upgrade) for \
         clients built on socket.io-client; false answers /socket.io/ 404.",
    ),
    (
        "socketio.recovery_ms",
        "How long a Socket.IO session's rooms and position are kept after it drops, for socket.io-client's \
         connection state recovery (socket.recovered).",
    ),
    ("debug.fault_injection", "true mounts POST /api/debug/crash, which makes a chosen actor panic (drills and tests)."),
    ("log.format", "\"text\": one human-readable line per event; \"json\": one JSON object per line."),
    (
        "log.level",
        "The least severe level logged (off, error, warn, info, debug, trace), or a filter of a level and \
         target=level directives such as \"info,herald::cluster=debug\". RUST_LOG, when set, replaces it.",
    ),
];

/// The options of a `[[namespaces]]` entry, with their defaults, in the
/// order `--help` shows them.
const NAMESPACE_KEYS: &[(&str, &str, &str)] = &[
    ("prefix", "(required)", "Rooms whose name starts with this; the longest matching prefix wins."),
    ("presence", "true", "false: joined and presence list no users ([]), count still counts; joins cost the same at any size."),
    ("join_events", "true", "false: no user_joined / user_left for these rooms."),
    ("client_publish", "true", "false: publish and typing from clients are FORBIDDEN; /api/publish still works."),
    ("history_size", "history.size", "Messages each room keeps; 0: none."),
    ("history_ttl_ms", "history.ttl_ms", "A room's history is dropped this long after its last publish."),
    (
        "slow_consumer",
        "\"disconnect\"",
        "What a member whose queue is full gets: \"disconnect\" (4008), \"drop\" (the room's frames that do not fit are \
         skipped) or \"latest\" (the newest message is kept and delivered once there is room).",
    ),
];

/// Every key of `config` as (`section.key`, its value as TOML), sorted.
pub(crate) fn values(config: &Config) -> Vec<(String, String)> {
    let Ok(toml::Value::Table(sections)) = toml::Value::try_from(config) else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for (section, keys) in sections {
        let toml::Value::Table(keys) = keys else { continue };
        for (key, value) in keys {
            values.push((format!("{section}.{key}"), value.to_string()));
        }
    }
    values
}

/// The configuration reference that `--help` prints: every key under its
/// section, with its default and its meaning wrapped to `width` columns.
pub fn reference(width: usize) -> String {
    let defaults = values(&Config::default());
    let mut text = String::new();
    let mut section = "";
    for (key, meaning) in KEYS {
        let (this_section, name) = key.split_once('.').unwrap_or(("", key));
        if this_section != section {
            if !section.is_empty() {
                text.push('\n');
            }
            section = this_section;
            text.push_str(&format!("  [{section}]\n"));
        }
        let default = defaults.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
        text.push_str(&format!("  {name} = {default}\n"));
        text.push_str(&wrap(meaning, "      ", width));
    }
    text.push_str("\n  [[namespaces]]  (none by default; env: HERALD_NAMESPACES__<n>__<KEY>)\n");
    for (name, default, meaning) in NAMESPACE_KEYS {
        text.push_str(&format!("  {name} = {default}\n"));
        text.push_str(&wrap(meaning, "      ", width));
    }
    text
}

/// `text` wrapped to `width` columns, each line starting with `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_meaning_and_no_meaning_is_stale() {
        let keys: Vec<String> = values(&Config::default()).into_iter().map(|(k, _)| k).collect();
        assert!(keys.len() > 20, "{keys:?}");
        for key in &keys {
            let entries = KEYS.iter().filter(|(k, _)| k == key).count();
            assert_eq!(entries, 1, "{key} has {entries} entries in KEYS");
        }
        for (key, meaning) in KEYS {
            assert!(keys.iter().any(|k| k == key), "{key} is in KEYS but not a key of Config");
            assert!(!meaning.trim().is_empty(), "{key} has no meaning");
        }
    }

    #[test]
    fn the_reference_gives_every_default_and_meaning() {
        let text = reference(80);
        assert!(text.contains("  [server]\n  host = \"127.0.0.1\"\n      Address to listen on.\n"), "{text}");
        assert!(text.contains("  port = 8080\n"), "{text}");
        assert!(text.contains("  allowed_origins = []\n"), "{text}");
        assert!(text.contains("  [log]\n  format = \"text\"\n"), "{text}");
        assert!(text.contains("  [[namespaces]]") && text.contains("  slow_consumer = \"disconnect\"\n"), "{text}");
        assert!(text.lines().all(|l| l.len() <= 80 || !l.trim().contains(' ')), "{text}");
        for (key, default) in values(&Config::default()) {
            let name = key.split_once('.').unwrap().1;
            assert!(text.contains(&format!("\n  {name} = {default}\n")), "{key} = {default} missing:\n{text}");
        }
    }

    #[test]
    fn the_readme_table_gives_the_same_keys_and_defaults() {
        let readme = include_str!("../../README.md");
        let documented: Vec<(String, String)> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let (key, rest) = l.split_once("` | `")?;
                let (default, _) = rest.split_once("` |")?;
                key.contains('.').then(|| (key.to_owned(), default.to_owned()))
            })
            .filter(|(key, _)| !key.starts_with("herald_"))
            .collect();
        let mut expected = values(&Config::default());
        let mut documented_sorted = documented.clone();
        expected.sort();
        documented_sorted.sort();
        assert_eq!(documented_sorted, expected);
    }

    #[test]
    fn wrapping_keeps_words_whole() {
        assert_eq!(wrap("one two three", "  ", 9), "  one two\n  three\n");
        assert_eq!(wrap("unbreakable-word x", "  ", 6), "  unbreakable-word\n  x\n");
    }
}
