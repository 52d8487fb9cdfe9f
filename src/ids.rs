//! Room names, user ids and node ids, each a type of its own: which string
//! is which is in the type, so a room name cannot go where a user id is
//! expected, and a `Vec<(NodeId, UserId)>` says on its face which half is
//! the node.
//!
//! Each is an `Arc<str>` and nothing more: 16 bytes, cloned by a reference
//! count, compared, hashed and ordered as its text, and looked up by `&str`
//! in a map or set keyed by it. It serialises as the plain string, so JSON
//! frames and the cluster's envelopes carry exactly what a `String` would.
//!
//! Making one checks nothing: the limits on what clients and backends send
//! are applied where it is read (client frames, API bodies, tokens, SSE
//! queries), and an id from another node or from Redis is taken as it is.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&*self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }

        impl From<Cow<'_, str>> for $name {
            fn from(s: Cow<'_, str>) -> Self {
                Self(s.into())
            }
        }

        impl From<Arc<str>> for $name {
            fn from(s: Arc<str>) -> Self {
                Self(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }
    };
}

id! {
    /// A room's name, as clients join it (`chat:1`).
    RoomName
}

id! {
    /// A user's id: a token's `sub`, an anonymous connection's `anon:<conn>`,
    /// or the sender an API call names (`server` by default).
    UserId
}

id! {
    /// A node's id (`server.node_id`, or a random one), as `welcome` shows
    /// it and as the origin of its cluster envelopes.
    NodeId
}

/// A new random token: 64 bits as 13 characters of base32 (`0-9a-v`), e.g.
/// a room's `epoch`.
pub fn random_token() -> String {
    let bits: u64 = rand::random();
    let alphabet = b"0123456789abcdefghijklmnopqrstuv";
    (0..13).map(|i| alphabet[((bits >> (i * 5)) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn an_id_is_exactly_an_arc_str() {
        assert_eq!(size_of::<RoomName>(), size_of::<Arc<str>>());
        assert_eq!(size_of::<UserId>(), size_of::<Arc<str>>());
        assert_eq!(size_of::<NodeId>(), size_of::<Arc<str>>());
        assert_eq!(size_of::<Option<UserId>>(), size_of::<Arc<str>>());
        assert_eq!(size_of::<(UserId, u32)>(), size_of::<(Arc<str>, u32)>());
    }

    #[test]
    fn it_serialises_as_the_plain_string() {
        let room = RoomName::from("chat:1");
        assert_eq!(serde_json::to_string(&room).unwrap(), r#""chat:1""#);
        assert_eq!(serde_json::from_str::<RoomName>(r#""chat:1""#).unwrap(), room);
        let users = vec![UserId::from("alice"), UserId::from("b\"ob")];
        assert_eq!(serde_json::to_string(&users).unwrap(), serde_json::to_string(&["alice", "b\"ob"]).unwrap());
        let online: std::collections::BTreeMap<UserId, bool> = [(UserId::from("alice"), true)].into();
        assert_eq!(serde_json::to_string(&online).unwrap(), r#"{"alice":true}"#);
        assert!(serde_json::from_str::<UserId>("7").is_err());
    }

    #[test]
    fn maps_keyed_by_an_id_are_read_by_str_in_str_order() {
        let mut rooms: HashMap<RoomName, u32> = HashMap::new();
        rooms.insert("lobby".into(), 1);
        assert_eq!(rooms.get("lobby"), Some(&1));
        assert_eq!(rooms.get("hall"), None);
        let users: BTreeSet<UserId> = ["bob", "alice", "Zed"].into_iter().map(UserId::from).collect();
        assert!(users.contains("alice"));
        assert_eq!(users.iter().map(|u| u.as_str()).collect::<Vec<_>>(), ["Zed", "alice", "bob"]);
    }

    #[test]
    fn it_reads_and_prints_as_its_text() {
        let node = NodeId::from(String::from("node-a"));
        assert_eq!(&*node, "node-a");
        assert_eq!(node, "node-a");
        assert_eq!(node.to_string(), "node-a");
        assert_eq!(format!("{node:?}"), r#""node-a""#);
        assert_eq!(NodeId::from(Arc::<str>::from("node-a")), node);
        assert!(node.starts_with("node"), "str's methods through Deref");
    }
}
