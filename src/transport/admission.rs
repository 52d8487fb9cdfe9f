//! What every transport checks before it opens a connection: the node is not
//! draining, the request's origin is allowed, a connection slot is free, and
//! the token on the request (if any) is good.

use std::sync::Arc;

use super::handshake::Head;
use crate::metrics::TransportKind;
use crate::connection::core::Handshake;
use crate::metrics::Refusal;
use crate::connection::services::OpenSlot;
use crate::node::Node;

/// Why a request may not open a connection: its status and message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub status: u16,
    pub message: &'static str,
}

impl Refused {
    const DRAINING: Self = Self { status: 503, message: "the server is shutting down" };
    const ORIGIN: Self = Self { status: 403, message: "this origin may not open connections" };
    const FULL: Self = Self { status: 503, message: "the server is at its connection limit" };
}

/// Admits `head` as a `kind` connection, or says why not: its slot among
/// `limits.max_connections`, and how its request authenticated.
pub(crate) fn admit(head: &Head, node: &Arc<Node>, kind: TransportKind) -> Result<(OpenSlot, Handshake), Refused> {
    if node.is_draining() {
        node.services.metrics.refused(Refusal::Draining);
        return Err(Refused::DRAINING);
    }
    if !origin_allowed(&node.services.config.server.allowed_origins, head.origin.as_deref()) {
        node.services.metrics.refused(Refusal::Origin);
        return Err(Refused::ORIGIN);
    }
    let Some(slot) = node.try_open(kind) else {
        node.services.metrics.refused(Refusal::MaxConnections);
        return Err(Refused::FULL);
    };
    let handshake = match request_token(head) {
        None => Handshake::None,
        Some(token) => match node.services.auth.verify(&token) {
            Ok(identity) => Handshake::Valid(identity),
            Err(error) => {
                tracing::debug!(%error, transport = kind.as_str(), "request token refused");
                Handshake::Invalid
            }
        },
    };
    Ok((slot, handshake))
}

/// Whether a request with `origin` may open a connection. Requests without
/// an `Origin` (non-browser clients) are allowed: the check guards browsers
/// against cross-site hijacking, and browsers always send one.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match origin {
        None => true,
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
    }
}

/// The token of an opening request: `Authorization: Bearer` first, then `?token=`.
fn request_token(head: &Head) -> Option<String> {
    if let Some(value) = &head.authorization {
        let mut parts = value.splitn(2, ' ');
        if parts.next().is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer")) {
            return Some(parts.next().unwrap_or("").trim().to_owned());
        }
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(&head.query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}
