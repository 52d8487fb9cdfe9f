//! # Herald
//!
//! A real-time engine for very many concurrent connections: rooms with
//! per-room ordered messages, direct messages, typing and presence, over
//! WebSocket or Server-Sent Events, plus an HTTP API for backends. One
//! binary, one port.
//!
//! # Layout
//!
//! The modules form layers, bottom first; a module uses only its own layer
//! or those below it (`tests/it/layers.rs` checks it).
//!
//! - Foundation:
//!   - [`protocol`]: every frame, error code and close code of the wire protocol.
//!   - [`config`]: the `config.toml` tree, environment overrides and validation.
//!   - [`metrics`]: the Prometheus registry, every metric and its label values.
//!   - [`ids`]: room names, user ids and node ids, each a type of its own.
//!   - [`delivery`]: what rooms and presence deliver to: connections as
//!     members, their outboxes, the registry of open connections.
//!   - [`supervisor`]: how an actor is written, and the root supervisor.
//!   - [`auth`]: JWT verification and room permissions.
//!   - [`rpc`]: the deadline on questions to actors.
//!   - [`logging`]: structured logs (`log.format`, `log.level`).
//!   - [`memory`]: giving freed memory back to the OS after a burst.
//! - [`cluster`]: the cluster engines: codec, backplane, relay, directory,
//!   and the [`cluster::Cluster`] facade the layers above use.
//! - The node's actors: [`presence`] (who is online, who is where) and
//!   [`rooms`] (the sharded registry, the rooms its shards run, their history
//!   and the namespaces that shape them).
//! - [`connection`]: the connection actor every transport shares: its core
//!   (session, limits, frames), the services it uses, the per-worker loop
//!   that drives connections and runs their timers. [`link`]: the cluster
//!   link actor, between the node's actors and the other nodes.
//! - [`node`]: what transports and the server share of a running node.
//! - [`transport`]: the handshake Herald reads itself, WebSocket and SSE,
//!   admission, and the plain HTTP routes. [`api`]: the server API
//!   (`/api/*`): publish, direct, broadcast, presence, stats.
//! - [`server`]: the composition root: runtimes, listening socket, HTTP
//!   server and the supervision tree, put together.
//!
//! # Errors
//!
//! Each error type is a `thiserror` enum whose message names its cause
//! (`could not listen on 127.0.0.1:8080: Address already in use`) and whose
//! `source()` is empty: no `#[source]` or `#[from]` beside a `{0}` in the
//! message, no field named `source`. A message is then whole when a log line
//! shows it alone (`%error`) and says its cause once when the binary prints
//! it with its chain (`{:#}`).

// Items are `pub` only where something outside the crate uses them (the
// binary, the benches, the integration tests), `pub(crate)` where another
// module does; what nothing uses does not build.
#![deny(unreachable_pub, dead_code)]

mod api;
mod auth;
pub mod cluster;
pub mod config;
mod connection;
pub mod delivery;
pub mod ids;
mod link;
pub mod logging;
mod memory;
pub mod metrics;
mod node;
pub mod presence;
pub mod protocol;
pub mod rooms;
mod rpc;
pub mod server;
mod supervisor;
mod transport;

pub use config::Config;
pub use server::Server;
