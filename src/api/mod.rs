//! The server API (`/api/*`): what a backend uses to reach clients without a
//! WebSocket of its own: publish to a room, message a user, broadcast, and
//! read presence, status and this node's counts.
//!
//! - [`auth`]: the `Authorization: Bearer <api.key>` check.
//! - [`body`]: reading and checking JSON bodies.
//! - [`error`]: [`ApiError`], the status and JSON body of every refusal.
//!
//! Every request under `/api`, known route or not, passes [`guard`] first:
//! it refuses the call when no key is configured (403) or the key is missing
//! or wrong (401), before any routing, so nothing about the API can be learnt
//! without the key. It also counts every answer in
//! `herald_api_requests_total` by route template and status class, and times
//! it in `herald_api_request_duration_seconds`.
//!
//! Publishes go through the room registry like a WebSocket publish, so they
//! share the room's `seq` and order; direct messages go through presence like
//! a WebSocket `direct`; a broadcast is queued to every open connection.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod error;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::connection::services::Services;
use crate::delivery::Delivery;
use crate::ids::UserId;
use crate::link::LinkHandle;
use crate::metrics::{ApiRoute, Source};
use crate::protocol::{now_ms, valid_room, valid_user, ServerFrame};
pub(crate) use error::ApiError;

/// The `from` of `message` and `direct` frames sent through the API without one.
const SERVER_SENDER: &str = "server";

/// Registers `/api/*`; `/api/debug/crash` and `/api/debug/stall` only with `fault_injection`.
pub(crate) fn routes(cfg: &mut web::ServiceConfig, fault_injection: bool) {
    let resource = |path: &str| web::resource(path).default_service(web::to(method_not_allowed));
    let mut scope = web::scope("/api");
    if fault_injection {
        scope = scope
            .service(resource("/debug/crash").route(web::post().to(crash)))
            .service(resource("/debug/stall").route(web::post().to(stall)));
    }
    cfg.service(
        scope
            .wrap(from_fn(guard))
            .service(resource("/publish").route(web::post().to(publish)))
            .service(resource("/direct").route(web::post().to(direct)))
            .service(resource("/broadcast").route(web::post().to(broadcast)))
            .service(resource("/rooms/{room}/presence").route(web::get().to(room_presence)))
            .service(resource("/rooms/{room}/history").route(web::get().to(room_history)))
            .service(resource("/users/{user}/status").route(web::get().to(user_status)))
            .service(resource("/stats").route(web::get().to(stats)))
            .default_service(web::to(not_found)),
    );
}

/// Checks the key before routing and counts every answer.
async fn guard<B: MessageBody>(
    services: web::Data<Services>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let route = ApiRoute::of(req.path());
    let started = std::time::Instant::now();
    let response = match auth::check(&services.config.api.key, req.headers()) {
        Err(refusal) => req.error_response(refusal).map_into_right_body(),
        Ok(()) => match next.call(req).await {
            Ok(response) => response.map_into_left_body(),
            Err(error) => {
                services.metrics.api_request(route, error.as_response_error().status_code().as_u16(), started.elapsed());
                return Err(error);
            }
        },
    };
    services.metrics.api_request(route, response.status().as_u16(), started.elapsed());
    Ok(response)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// `POST /api/publish {room, data, from?}` → `{"seq": n}`.
/// How long an API request's body has to arrive.
fn body_timeout(services: &Services) -> std::time::Duration {
    std::time::Duration::from_millis(services.config.server.handshake_timeout_ms)
}

async fn publish(services: web::Data<Services>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload, services.config.limits.max_message_bytes, body_timeout(&services)).await?;
    let fields = body::Fields::parse(&bytes)?;
    let (room, data, from) = (fields.room()?, fields.data()?, fields.sender_or(SERVER_SENDER)?);
    services.metrics.published(Source::Api);
    let seq = services
        .rooms
        .publish_from_server(room.into(), from.into(), data.to_owned())
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "seq": seq })))
}

/// `POST /api/direct {user, data, from?}` → `{}`, whether or not the user is online.
async fn direct(services: web::Data<Services>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload, services.config.limits.max_message_bytes, body_timeout(&services)).await?;
    let fields = body::Fields::parse(&bytes)?;
    let (user, data, from) = (fields.user()?, fields.data()?, fields.sender_or(SERVER_SENDER)?);
    let frame = ServerFrame::Direct { from: &from, data, ts: now_ms() }.encode();
    let user = UserId::from(user);
    services.cluster.direct(&user, frame.text());
    services.presence.direct(user, frame);
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /api/broadcast {data}` → `{"delivered": n}`: queued to every open
/// connection, in rooms or not, anonymous or not; `delivered` counts this
/// node's (with clustering, the other nodes deliver to theirs).
async fn broadcast(services: web::Data<Services>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload, services.config.limits.max_message_bytes, body_timeout(&services)).await?;
    let data = body::Fields::parse(&bytes)?.data()?;
    let frame = ServerFrame::Broadcast { data, ts: now_ms() }.encode();
    services.cluster.broadcast(frame.text());
    let mut delivered = 0u64;
    services.connections.for_each(|outbox| {
        if outbox.deliver(&frame, &services.metrics) == Delivery::Queued {
            delivered += 1;
        }
    });
    Ok(HttpResponse::Ok().json(json!({ "delivered": delivered })))
}

/// `GET /api/rooms/{room}/presence` → `{"room": r, "users": [...], "count": n}`.
async fn room_presence(services: web::Data<Services>, room: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let room = room.into_inner();
    if !valid_room(&room) {
        return Err(ApiError::bad_request("the room must be 1 to 128 bytes of [A-Za-z0-9_.:-]"));
    }
    let users = services.room_presence(room.as_str().into()).await.map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "room": room, "users": users.json(), "count": users.len() })))
}

/// `GET /api/rooms/{room}/history?since=N&limit=M` → `{"room", "epoch",
/// "seq", "messages"}`: the held messages after `since` (default 0),
/// oldest first, at most `limit` (default 100, 1 to 1000).
async fn room_history(
    services: web::Data<Services>,
    room: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let room = room.into_inner();
    if !valid_room(&room) {
        return Err(ApiError::bad_request("the room must be 1 to 128 bytes of [A-Za-z0-9_.:-]"));
    }
    let param = |name: &str| query.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let since = match param("since") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| ApiError::bad_request("since must be an integer of 0 or more"))?,
    };
    let limit = match param("limit") {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 1000"))?,
    };
    let page = services.room_history(room.as_str().into(), since, limit).await.map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "room": room, "epoch": page.epoch, "seq": page.seq, "messages": page.messages })))
}

/// `GET /api/users/{user}/status` → `{"user": u, "online": bool}`.
async fn user_status(services: web::Data<Services>, user: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let user = user.into_inner();
    if !valid_user(&user) {
        return Err(ApiError::bad_request("the user must be 1 to 256 bytes"));
    }
    let status = services.presence.status(vec![user.as_str().into()]).await.map_err(|_| ApiError::Unavailable)?;
    let online = status.get(user.as_str()).copied().unwrap_or(false);
    Ok(HttpResponse::Ok().json(json!({ "user": user, "online": online })))
}

/// `GET /api/stats` → `{"node", "connections", "rooms", "users"}` of this node.
async fn stats(services: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    let counts = services.presence.counts().await.map_err(|_| ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({
        "node": &*services.id,
        "connections": counts.connections,
        "rooms": counts.rooms,
        "users": counts.users,
    })))
}

/// `POST /api/debug/crash {target, room?, conn?}` → `{"crashed": target}`:
/// makes one actor panic, for drills and tests. `target` is `room` (with
/// `room`), `registry` (the shard of `room`, or of `""` without one),
/// `presence`, `cluster` (the cluster link, with clustering), or
/// `connection` (with `conn`: the `welcome` frame's id, or its number).
/// Answers once the actor has been replaced (or, for a connection, is
/// gone), so what the caller sends next meets the new actor.
async fn crash(services: web::Data<Services>, link: web::Data<Option<LinkHandle>>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload, services.config.limits.max_message_bytes, body_timeout(&services)).await?;
    let fields = body::Fields::parse(&bytes)?;
    let target = fields.target()?;
    match &*target {
        "room" => {
            let room = fields.room()?;
            let crashed = services.rooms.crash_room(&room).await.ok_or(ApiError::NoSuch("no such room on this node"))?;
            replaced(|| async { services.rooms.room_life(&room).await != Some(crashed) }).await?;
        }
        "registry" => {
            let room = fields.room_if_any()?.unwrap_or_default();
            let crashed = services.rooms.crash_shard(&room).ok_or(ApiError::Unavailable)?;
            replaced(|| async { services.rooms.shard_actor(&room).is_some_and(|now| now != crashed) }).await?;
        }
        "presence" => {
            let crashed = services.presence.crash().ok_or(ApiError::Unavailable)?;
            replaced(|| async { services.presence.actor().is_some_and(|now| now != crashed) }).await?;
        }
        "cluster" => {
            let link = link.as_ref().as_ref().ok_or(ApiError::NoSuch("this node is not clustered"))?;
            let crashed = link.crash().ok_or(ApiError::Unavailable)?;
            replaced(|| async { link.actor().is_some_and(|now| now != crashed) }).await?;
        }
        "connection" => {
            let conn = fields.conn(&services.id)?;
            let outbox = services.connections.get(conn).ok_or(ApiError::NoSuch("no such connection on this node"))?;
            outbox.crash();
            replaced(|| async { services.connections.get(conn).is_none() }).await?;
        }
        _ => return Err(ApiError::bad_request("target must be room, registry, presence, cluster or connection")),
    }
    Ok(HttpResponse::Ok().json(json!({ "crashed": target })))
}

/// `POST /api/debug/stall {room}` → `{"stalled": room}`: the room stops
/// answering for half a second longer than a connection waits for it
/// ([`crate::rpc::CALL_TIMEOUT`]), so a join sent meanwhile is answered
/// `INTERNAL` and lands later; for drills and tests. Answers at once.
async fn stall(services: web::Data<Services>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(payload, services.config.limits.max_message_bytes, body_timeout(&services)).await?;
    let room = body::Fields::parse(&bytes)?.room()?;
    let time = crate::rpc::CALL_TIMEOUT + std::time::Duration::from_millis(500);
    if !services.rooms.stall_room(&room, time).await {
        return Err(ApiError::NoSuch("no such room on this node"));
    }
    Ok(HttpResponse::Ok().json(json!({ "stalled": room })))
}

/// Waits until `done`, for at most [`crate::rpc::CALL_TIMEOUT`].
async fn replaced<F: std::future::Future<Output = bool>>(done: impl Fn() -> F) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + crate::rpc::CALL_TIMEOUT;
    while !done().await {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable);
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates() {
        assert_eq!(ApiRoute::of("/api/publish"), ApiRoute::Publish);
        assert_eq!(ApiRoute::of("/api/rooms/chat:1/presence"), ApiRoute::RoomPresence);
        assert_eq!(ApiRoute::of("/api/users/a%20b/status"), ApiRoute::UserStatus);
        assert_eq!(ApiRoute::of("/api/stats"), ApiRoute::Stats);
        for other in ["/api", "/api/", "/api/nope", "/api/rooms//presence", "/api/publish/x", "/api/rooms/a/b/presence"] {
            assert_eq!(ApiRoute::of(other), ApiRoute::Other, "{other}");
        }
    }
}
