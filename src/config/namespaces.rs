//! `[[namespaces]]`: options for every room whose name starts with a prefix.
//!
//! Each entry is read on its own, so a mistake names its entry and key
//! (`namespaces[1].slow_consumer`) rather than the whole list. From the
//! environment, entries are written by index, `HERALD_NAMESPACES__<n>__<key>`
//! (`HERALD_NAMESPACES__0__PREFIX=live.`), or as one inline list
//! (`HERALD_NAMESPACES='[{prefix = "live.", presence = false}]'`), and
//! replace the file's list as a whole: a list cannot be merged entry by
//! entry without guessing which entry an index meant.

use std::collections::BTreeMap;
use std::fmt;

use figment::value::Value;
use serde::{Deserialize, Serialize};

use super::{scalar_string, ConfigError, HistoryConfig};

/// What a member whose outbound queue is full gets from a room's frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Closed with 4008: it leaves every room, and the others get everything.
    #[default]
    Disconnect,
    /// Stays, and the room's frames that do not fit are skipped for it.
    Drop,
    /// Stays; of the room's messages that did not fit, the newest is kept
    /// and delivered once its queue has room.
    Latest,
}

impl SlowConsumer {
    pub const ALL: [SlowConsumer; 3] = [SlowConsumer::Disconnect, SlowConsumer::Drop, SlowConsumer::Latest];

    /// Its name in the config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumer::Disconnect => "disconnect",
            SlowConsumer::Drop => "drop",
            SlowConsumer::Latest => "latest",
        }
    }
}

/// One `[[namespaces]]` entry. Options it leaves out take the defaults of a
/// room in no namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Rooms whose name starts with this (non-empty); the longest matching
    /// prefix wins. Required.
    #[serde(deserialize_with = "scalar_string")]
    pub prefix: String,
    /// `false`: `joined.users` and `presence.users` are `[]`, and a join
    /// costs the same in a room of any size (`count` still counts). Default `true`.
    #[serde(default = "yes")]
    pub presence: bool,
    /// `false`: no `user_joined` / `user_left`. Default `true`.
    #[serde(default = "yes")]
    pub join_events: bool,
    /// `false`: `publish` and `typing` from clients are `FORBIDDEN`;
    /// `/api/publish` still works. Default `true`.
    #[serde(default = "yes")]
    pub client_publish: bool,
    /// Messages each room keeps (0: none). Default `history.size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// A room's history is dropped this long after its last publish.
    /// Default `history.ttl_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_ttl_ms: Option<u64>,
    /// What a member whose queue is full gets. Default `"disconnect"`.
    #[serde(default)]
    pub slow_consumer: SlowConsumer,
}

fn yes() -> bool {
    true
}

impl NamespaceConfig {
    /// An entry for `prefix` with every option at its default.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            presence: true,
            join_events: true,
            client_publish: true,
            history_size: None,
            history_ttl_ms: None,
            slow_consumer: SlowConsumer::Disconnect,
        }
    }
}

/// Reads the `[[namespaces]]` list: an array of tables from the file, or a
/// table of entries by index from the environment.
pub(super) fn entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NamespaceConfig>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<NamespaceConfig>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of [[namespaces]] tables (from the environment: HERALD_NAMESPACES__<n>__<key>)")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut list = Vec::new();
            while let Some(value) = seq.next_element::<Value>()? {
                list.push(entry(list.len(), value).map_err(serde::de::Error::custom)?);
            }
            Ok(list)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut by_index = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                let index: usize = key.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`namespaces.{key}`: namespaces are a list of [[namespaces]] tables \
                         (from the environment, entries by number: HERALD_NAMESPACES__0__PREFIX)"
                    ))
                })?;
                by_index.insert(index, value);
            }
            by_index.into_iter().map(|(index, value)| entry(index, value).map_err(serde::de::Error::custom)).collect()
        }
    }
    d.deserialize_any(Entries)
}

/// Entry number `index` of the list, or what is wrong with it, naming the key.
fn entry(index: usize, value: Value) -> Result<NamespaceConfig, String> {
    if !matches!(value, Value::Dict(..)) {
        return Err(format!("`namespaces[{index}]` is not a table: write it as [[namespaces]] with prefix = \"...\""));
    }
    NamespaceConfig::deserialize(&value).map_err(|error| {
        let key: Vec<&str> = error.path.iter().map(String::as_str).collect();
        match key.is_empty() {
            true => format!("`namespaces[{index}]`: {}", error.kind),
            false => format!("`namespaces[{index}].{}`: {}", key.join("."), error.kind),
        }
    })
}

/// Checks what deserialised but cannot work: an empty or repeated prefix,
/// or history options that could not be history options.
pub(super) fn validate(namespaces: &[NamespaceConfig], history: &HistoryConfig) -> Result<(), ConfigError> {
    fn invalid(key: &'static str, reason: String) -> ConfigError {
        ConfigError::Invalid { key, reason }
    }
    for (index, namespace) in namespaces.iter().enumerate() {
        let prefix = &namespace.prefix;
        if prefix.is_empty() {
            return Err(invalid("namespaces.prefix", format!("entry {index} has an empty prefix; a prefix names at least one character")));
        }
        if let Some(first) = namespaces[..index].iter().position(|other| other.prefix == *prefix) {
            return Err(invalid("namespaces.prefix", format!("entries {first} and {index} both have prefix {prefix:?}")));
        }
        let size = namespace.history_size.unwrap_or(history.size);
        if namespace.history_size.is_some_and(|size| size > 100_000) {
            return Err(invalid("namespaces.history_size", format!("entry {index} ({prefix:?}): must be at most 100000")));
        }
        if size > 0 && namespace.history_ttl_ms.unwrap_or(history.ttl_ms) == 0 {
            return Err(invalid(
                "namespaces.history_ttl_ms",
                format!("entry {index} ({prefix:?}): must be at least 1 while its history size is not 0"),
            ));
        }
    }
    Ok(())
}
