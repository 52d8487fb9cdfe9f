//! # Herald
//!
//! A real-time engine for very many concurrent connections: rooms with
//! per-room ordered messages, direct messages, typing and presence, over
//! WebSocket or Server-Sent Events, plus an HTTP API for backends. One
//! binary, one port.
//!
//! # Layout
//!
//! - [`ids`]: room names, user ids and node ids, each a type of its own.
//! - [`config`]: the `config.toml` tree, environment overrides and validation.
//! - [`protocol`]: every frame, error code and close code of the wire protocol.
//! - [`auth`]: JWT verification and room permissions.
//! - [`connection`]: the connection actor every transport shares: its core
//!   (session, limits, frames), its outbox (where every write goes), the
//!   per-worker loop that drives connections and runs their timers.
//! - [`transport`]: the handshake Herald reads itself, WebSocket and SSE,
//!   admission, and the plain HTTP routes.
//! - [`api`]: the server API (`/api/*`): publish, direct, broadcast, presence, stats.
//! - [`rooms`]: the sharded room registry and the rooms, actors their shards run.
//! - [`presence`]: the presence registry actor (who is online, who is where).
//! - [`supervisor`]: the supervision tree that owns rooms and presence.
//! - [`node`]: the services one node shares between its connections.
//! - [`server`]: runtimes, listening socket and HTTP server, put together.
//! - [`metrics`]: the Prometheus registry and every metric.
//! - [`logging`]: structured logs (`log.format`, `log.level`).
//! - [`memory`]: giving freed memory back to the OS after a burst.
//! - [`rpc`]: request/reply to actors with a deadline.
//! - [`cluster`]: nodes acting as one through Redis: codec, backplane, relay,
//!   directory (cluster-wide presence and liveness) and the cluster link actor.
//!
//! # Errors
//!
//! Each error type is a `thiserror` enum whose message names its cause
//! (`could not listen on 127.0.0.1:8080: Address already in use`) and whose
//! `source()` is empty: no `#[source]` or `#[from]` beside a `{0}` in the
//! message, no field named `source`. A message is then whole when a log line
//! shows it alone (`%error`) and says its cause once when the binary prints
//! it with its chain (`{:#}`).

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod connection;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod rooms;
pub mod rpc;
pub mod server;
pub mod supervisor;
pub mod transport;

pub use config::Config;
pub use server::Server;
