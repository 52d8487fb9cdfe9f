//! What every transport checks before it opens a connection: the node is not
//! draining, the request's origin is allowed, a connection slot is free, and
//! the token on the request (if any) is good.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::http::error_response;
use super::TransportKind;
use crate::auth::Identity;
use crate::connection::control::SocketFd;
use crate::connection::Control;
use crate::metrics::Refusal;
use crate::node::{Node, OpenSlot};

/// How the opening request authenticated.
pub enum Handshake {
    /// No token on the request.
    None,
    Valid(Identity),
    /// A token was present and is bad.
    Invalid,
}

/// A request allowed to open a connection.
pub struct Admitted {
    /// The connection's place among `limits.max_connections`.
    pub slot: OpenSlot,
    /// Reaches the connection's socket when its actor cannot be reached.
    pub control: Arc<Control>,
    pub handshake: Handshake,
}

/// Admits `req` as a `kind` connection, or answers why not.
pub fn admit(req: &HttpRequest, node: &Arc<Node>, kind: TransportKind) -> Result<Admitted, HttpResponse> {
    if node.is_draining() {
        node.metrics.refused(Refusal::Draining);
        return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
    }
    if !origin_allowed(&node.config.server.allowed_origins, req) {
        node.metrics.refused(Refusal::Origin);
        return Err(error_response(StatusCode::FORBIDDEN, "this origin may not open connections"));
    }
    let Some(slot) = node.try_open(kind) else {
        node.metrics.refused(Refusal::MaxConnections);
        return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is at its connection limit"));
    };
    let socket = req.conn_data::<SocketFd>().map(|fd| fd.0);
    let handshake = match request_token(req) {
        None => Handshake::None,
        Some(token) => match node.auth.verify(&token) {
            Ok(identity) => Handshake::Valid(identity),
            Err(error) => {
                tracing::debug!(%error, transport = kind.as_str(), "request token refused");
                Handshake::Invalid
            }
        },
    };
    Ok(Admitted { slot, control: Arc::new(Control::new(socket)), handshake })
}

/// Whether the request's `Origin` may open a connection. Requests without an
/// `Origin` (non-browser clients) are allowed: the check guards browsers
/// against cross-site hijacking, and browsers always send one.
fn origin_allowed(allowed: &[String], req: &HttpRequest) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(header::ORIGIN) {
        None => true,
        Some(origin) => origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

/// The `Access-Control-Allow-Origin` value for an admitted cross-origin
/// request: its own `Origin`, which [`admit`] has already checked.
pub fn allow_origin(req: &HttpRequest) -> Option<HeaderValue> {
    req.headers().get(header::ORIGIN).cloned()
}

/// The token of an opening request: `Authorization: Bearer` first, then `?token=`.
fn request_token(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(value) = header {
        let mut parts = value.splitn(2, ' ');
        if parts.next().is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer")) {
            return Some(parts.next().unwrap_or("").trim().to_owned());
        }
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}
