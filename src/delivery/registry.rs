//! Every open connection of this node, by id: what a graceful drain closes
//! and what a node-wide broadcast reaches.
//!
//! Split into shards by connection id, so opening and closing connections on
//! different workers rarely meet on one lock.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{ConnId, Outbox};

const SHARDS: usize = 32;

/// The open connections of a node.
pub struct Registry {
    shards: Box<[Mutex<HashMap<ConnId, Outbox>>]>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl Registry {
    fn shard(&self, conn: ConnId) -> &Mutex<HashMap<ConnId, Outbox>> {
        &self.shards[conn.0 as usize % SHARDS]
    }

    pub fn insert(&self, conn: ConnId, outbox: Outbox) {
        self.shard(conn).lock().insert(conn, outbox);
    }

    pub fn remove(&self, conn: ConnId) {
        self.shard(conn).lock().remove(&conn);
    }

    /// The outbox of one connection.
    pub fn get(&self, conn: ConnId) -> Option<Outbox> {
        self.shard(conn).lock().get(&conn).cloned()
    }

    /// Open connections right now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every open connection's outbox, one shard locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(&Outbox)) {
        for shard in self.shards.iter() {
            for outbox in shard.lock().values() {
                f(outbox);
            }
        }
    }
}
