//! Namespaces: what a room's name says about how it behaves.
//!
//! A room takes its [`Namespace`] once, when its shard first numbers or
//! creates it (the longest `[[namespaces]]` prefix its name starts with, or
//! the defaults), and keeps it in its [`super::history::Stream`] for the
//! node's lifetime: nothing on a message's path looks a name up again.

use std::sync::Arc;

use crate::cluster::Keep;
use crate::config::{Config, SlowConsumer};

/// The options of the rooms of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `joined` and `presence` list the users; without, `users` is `[]`,
    /// the room keeps only a count, and a join costs the same at any size.
    pub presence: bool,
    /// Members hear `user_joined` and `user_left`.
    pub join_events: bool,
    /// Clients may `publish` and send `typing`.
    pub client_publish: bool,
    /// What history keeps of each room's messages.
    pub history: Keep,
    /// What a member whose queue is full gets from the room's frames.
    pub slow_consumer: SlowConsumer,
}

/// Every namespace of the node, ready to resolve a room name.
#[derive(Debug)]
pub struct Namespaces {
    /// Longest prefix first, so the first match is the longest.
    entries: Vec<(Box<str>, Arc<Namespace>)>,
    default: Arc<Namespace>,
}

impl Namespaces {
    pub fn new(config: &Config) -> Self {
        let history = Keep { size: config.history.size, ttl_ms: config.history.ttl_ms };
        let default = Arc::new(Namespace {
            presence: true,
            join_events: true,
            client_publish: true,
            history,
            slow_consumer: SlowConsumer::Disconnect,
        });
        let mut entries: Vec<(Box<str>, Arc<Namespace>)> = config
            .namespaces
            .iter()
            .map(|entry| {
                let namespace = Namespace {
                    presence: entry.presence,
                    join_events: entry.join_events,
                    client_publish: entry.client_publish,
                    history: Keep {
                        size: entry.history_size.unwrap_or(history.size),
                        ttl_ms: entry.history_ttl_ms.unwrap_or(history.ttl_ms),
                    },
                    slow_consumer: entry.slow_consumer,
                };
                (entry.prefix.as_str().into(), Arc::new(namespace))
            })
            .collect();
        entries.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { entries, default }
    }

    /// The namespace of the room `name`.
    pub fn resolve(&self, name: &str) -> &Arc<Namespace> {
        self.entries.iter().find(|(prefix, _)| name.starts_with(&**prefix)).map_or(&self.default, |(_, ns)| ns)
    }

    /// The namespace of rooms that match no prefix.
    pub fn default_namespace(&self) -> &Arc<Namespace> {
        &self.default
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new(&Config::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_wins_and_others_take_the_defaults() {
        let config = Config::from_toml(
            "[history]\nsize = 9\n[[namespaces]]\nprefix = \"live.\"\npresence = false\nhistory_ttl_ms = 5\n\
             [[namespaces]]\nprefix = \"live.vip.\"\nslow_consumer = \"drop\"\n",
        )
        .unwrap();
        let namespaces = Namespaces::new(&config);
        let live = namespaces.resolve("live.show");
        assert!(!live.presence && live.join_events && live.client_publish);
        assert_eq!(live.history, Keep { size: 9, ttl_ms: 5 });
        let vip = namespaces.resolve("live.vip.backstage");
        assert!(vip.presence, "the longer prefix's own options, not merged with the shorter's");
        assert_eq!(vip.slow_consumer, SlowConsumer::Drop);
        assert!(Arc::ptr_eq(namespaces.resolve("lobby"), namespaces.default_namespace()));
        assert!(Arc::ptr_eq(namespaces.resolve("live"), namespaces.default_namespace()), "a prefix matches whole");
        assert_eq!(namespaces.resolve("lobby").history, Keep { size: 9, ttl_ms: 300_000 });
    }
}
