//! The Lua scripts the cluster runs in Redis, one file each under
//! `src/cluster/lua/`. Redis runs a script as one step, so a change to
//! several keys is never seen half done.
//!
//! Scripts are called by their SHA-1 (`EVALSHA`), so a call carries a
//! 40-byte name instead of the whole script. The backplane loads every
//! script ([`ALL`]) after each (re)connect, ahead of the first call in the
//! same pipeline, and again after Redis answers `NOSCRIPT` (its script
//! cache was flushed).

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

/// A Lua script and its SHA-1, computed on first use.
pub(crate) struct Script {
    source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(source: &'static str) -> Self {
        Self { source, sha: OnceLock::new() }
    }

    /// The script, as `SCRIPT LOAD` takes it.
    pub(crate) fn source(&self) -> &'static str {
        self.source
    }

    /// Its SHA-1 in lowercase hex, as `EVALSHA` takes it.
    pub(crate) fn sha(&self) -> &str {
        self.sha.get_or_init(|| {
            Sha1::digest(self.source.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
        })
    }
}

pub(super) static SEQUENCED_PUBLISH: Script = Script::new(include_str!("lua/sequenced_publish.lua"));
pub(super) static HISTORY: Script = Script::new(include_str!("lua/history.lua"));
pub(super) static RAISE_COUNTER: Script = Script::new(include_str!("lua/raise_counter.lua"));
pub(super) static HEARTBEAT: Script = Script::new(include_str!("lua/heartbeat.lua"));
pub(super) static NODES: Script = Script::new(include_str!("lua/nodes.lua"));
pub(super) static FORGET: Script = Script::new(include_str!("lua/forget.lua"));
pub(super) static ROOM: Script = Script::new(include_str!("lua/room.lua"));
pub(super) static USER: Script = Script::new(include_str!("lua/user.lua"));
pub(super) static MEMBERS: Script = Script::new(include_str!("lua/members.lua"));
pub(super) static ROOM_COUNT: Script = Script::new(include_str!("lua/room_count.lua"));
pub(super) static ONLINE: Script = Script::new(include_str!("lua/online.lua"));
pub(super) static REPLACE_ROOM: Script = Script::new(include_str!("lua/replace_room.lua"));
pub(super) static RETAIN_ROOMS: Script = Script::new(include_str!("lua/retain_rooms.lua"));
pub(super) static REPLACE_USERS: Script = Script::new(include_str!("lua/replace_users.lua"));
pub(super) static SESSION_KEEP: Script = Script::new(include_str!("lua/session_keep.lua"));
pub(super) static SESSION_TAKE: Script = Script::new(include_str!("lua/session_take.lua"));

/// Every script, as the backplane loads them.
pub(super) static ALL: [&Script; 16] = [
    &SEQUENCED_PUBLISH,
    &HISTORY,
    &RAISE_COUNTER,
    &HEARTBEAT,
    &NODES,
    &FORGET,
    &ROOM,
    &USER,
    &MEMBERS,
    &ROOM_COUNT,
    &ONLINE,
    &REPLACE_ROOM,
    &RETAIN_ROOMS,
    &REPLACE_USERS,
    &SESSION_KEEP,
    &SESSION_TAKE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_named_by_the_sha1_redis_gives_it() {
        // `SCRIPT LOAD "return 1"` answers this SHA-1.
        assert_eq!(Script::new("return 1").sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn every_script_is_listed_once() {
        let mut shas: Vec<&str> = ALL.iter().map(|script| script.sha()).collect();
        shas.sort_unstable();
        shas.dedup();
        assert_eq!(shas.len(), ALL.len());
    }
}
