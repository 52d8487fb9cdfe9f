//! Transports: how frames reach a client's socket.
//!
//! - [`ws`]: WebSocket connections (`GET /ws`), one actix actor each.
//! - [`http`]: the plain HTTP routes (`/healthz`, `/readyz`, `/metrics`).

pub mod http;
pub mod ws;
