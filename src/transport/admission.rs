//! What every transport checks before it opens a connection: the node is not
//! draining, the request's origin is allowed, a connection slot is free, and
//! the token on the request (if any) is good.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::http::error_response;
use super::Transport;
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
    /// The connection's place among `limits.max_connections`, held by
    /// whatever lives until the socket closes (the connection itself unless
    /// its transport takes the slot first).
    pub slot: Option<OpenSlot>,
    /// Reaches the connection's socket when its actor cannot be reached.
    pub control: Arc<Control>,
    pub handshake: Handshake,
}

/// Why a request may not open a connection.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub status: StatusCode,
    pub message: &'static str,
}

impl Refused {
    const DRAINING: Self = Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "the server is shutting down" };
    const ORIGIN: Self = Self { status: StatusCode::FORBIDDEN, message: "this origin may not open connections" };
    const FULL: Self =
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "the server is at its connection limit" };

    /// The answer to the refused request: its status and a JSON error body.
    pub fn response(self) -> HttpResponse {
        error_response(self.status, self.message)
    }
}

/// Admits `req` as a connection carried by `T`, or says why not.
pub fn admit<T: Transport>(req: &HttpRequest, node: &Arc<Node>) -> Result<Admitted, Refused> {
    let kind = T::KIND;
    if node.is_draining() {
        node.metrics.refused(Refusal::Draining);
        return Err(Refused::DRAINING);
    }
    if !origin_allowed(&node.config.server.allowed_origins, req) {
        node.metrics.refused(Refusal::Origin);
        return Err(Refused::ORIGIN);
    }
    let Some(slot) = node.try_open(kind) else {
        node.metrics.refused(Refusal::MaxConnections);
        return Err(Refused::FULL);
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
    Ok(Admitted { slot: Some(slot), control: Arc::new(Control::new(socket, T::carries)), handshake })
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
