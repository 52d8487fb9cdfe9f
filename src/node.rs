//! The services one Herald node shares between its connections: config,
//! token verification, the room registry, presence and metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::connection::ConnId;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::rooms::RoomRegistry;

/// Shared state of a running node.
pub struct Node {
    pub config: Config,
    /// This node's id, as sent in `welcome`.
    pub id: Arc<str>,
    pub auth: Authenticator,
    pub rooms: RoomRegistry,
    pub presence: Presence,
    pub metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    ready: AtomicBool,
}

impl Node {
    pub fn new(config: Config, rooms: RoomRegistry, presence: Presence, metrics: Arc<Metrics>) -> Self {
        let id: Arc<str> = if config.server.node_id.is_empty() {
            format!("{:08x}", rand::random::<u32>()).into()
        } else {
            config.server.node_id.as_str().into()
        };
        Self {
            auth: Authenticator::new(&config.auth.jwt_secret),
            config,
            id,
            rooms,
            presence,
            metrics,
            next_conn: AtomicU64::new(1),
            ready: AtomicBool::new(true),
        }
    }

    /// A fresh connection id.
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// The id clients see for `conn`: `<node>-<n>`, unique across nodes.
    pub fn conn_label(&self, conn: ConnId) -> String {
        format!("{}-{}", self.id, conn.0)
    }

    /// Whether `/readyz` reports ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
