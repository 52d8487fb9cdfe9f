//! Transports: how frames reach a client's socket.
//!
//! - [`ws`]: WebSocket connections (`GET /ws`), one actix actor each.
//! - [`frame_guard`]: refuses oversized WebSocket frames from their headers.
//! - [`http`]: the plain HTTP routes (`/healthz`, `/readyz`, `/metrics`).

pub mod frame_guard;
pub mod http;
pub mod ws;
