//! The HTTP port's routes: the transports (`/ws`, `/sse`), liveness,
//! readiness and the Prometheus exposition; the server API's routes live in
//! [`crate::api`] and are mounted here.

use actix_web::{web, HttpResponse};

use crate::metrics::ActorKind;
use crate::node::Node;

/// Registers every route of the HTTP port; `/api/debug/*` only when
/// `debug.fault_injection` is on, `/demo/*` only when `demo.enabled` is.
pub(crate) fn routes(cfg: &mut web::ServiceConfig, fault_injection: bool, demo: bool, socketio: bool) {
    if demo {
        cfg.configure(super::demo::routes);
    }
    if socketio {
        cfg.configure(super::socketio::polling::routes);
    }
    cfg.route("/ws", web::get().to(reconnect))
        .route("/sse", web::get().to(reconnect))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(|cfg| crate::api::routes(cfg, fault_injection));
}

/// `GET /ws` or `GET /sse` on a kept-alive HTTP connection: a connection
/// takes over its socket from the first request on, so the client is sent
/// to the same URL on a fresh one (307, and this one is closed).
async fn reconnect(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((actix_web::http::header::LOCATION, req.uri().to_string()))
        .force_close()
        .finish()
}

/// `GET /healthz`: 200 while the process runs.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `GET /readyz`: 200 while accepting connections, 503 otherwise.
async fn readyz(node: web::Data<Node>) -> HttpResponse {
    if node.is_ready() {
        HttpResponse::Ok().content_type("text/plain").body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().content_type("text/plain").body("not ready\n")
    }
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(node: web::Data<Node>) -> HttpResponse {
    if let Some(connected) = node.services.cluster.redis_connected() {
        // As of this scrape, not of the cluster link's last tick.
        node.services.metrics.redis_connected.set(connected as i64);
    }
    // Outbound queues are read, not tracked: one relaxed load per connection.
    let (mut deepest, mut queued) = (0, 0);
    node.services.connections.for_each(|outbox| {
        let depth = outbox.queue_depth();
        deepest = deepest.max(depth);
        queued += u64::from(depth);
    });
    node.services.metrics.queue_depth_max.set(deepest.into());
    node.services.metrics.mailbox_backlog(ActorKind::Connection).set(queued as i64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(node.services.metrics.render())
}
