//! The browser demo, when `demo.enabled`: the chat page of `examples/chat/`
//! at `/demo/`, the JavaScript client's modules of `clients/js/src/` at
//! `/demo/client/`, both read from the checkout at `demo.root`, and
//! `POST /demo/token`, which signs a short-lived token for the name a
//! visitor picks. A newcomer runs the server and opens one URL; nothing is
//! built and no other server runs.
//!
//! Files are served by name from those two folders only: a name is one path
//! segment of `[A-Za-z0-9_.-]` that does not start with a dot, so nothing
//! outside them can be reached.

use std::path::{Path, PathBuf};

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::connection::services::Services;

/// How long a demo token is valid.
const TOKEN_SECS: u64 = 12 * 3600;

/// Registers the demo's routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/demo", web::get().to(to_index))
        .route("/demo/", web::get().to(index))
        .route("/demo/token", web::post().to(token))
        .route("/demo/client/{file}", web::get().to(client_file))
        .route("/demo/{file}", web::get().to(page_file));
}

async fn to_index() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((actix_web::http::header::LOCATION, "/demo/")).finish()
}

async fn index(services: web::Data<Services>) -> HttpResponse {
    serve(&folder(&services, "examples/chat"), "index.html").await
}

async fn page_file(services: web::Data<Services>, file: web::Path<String>) -> HttpResponse {
    serve(&folder(&services, "examples/chat"), &file).await
}

async fn client_file(services: web::Data<Services>, file: web::Path<String>) -> HttpResponse {
    serve(&folder(&services, "clients/js/src"), &file).await
}

fn folder(services: &Services, under: &str) -> PathBuf {
    Path::new(&services.config.demo.root).join(under)
}

/// Whether `name` is one file name this module may serve.
fn servable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

async fn serve(folder: &Path, name: &str) -> HttpResponse {
    if !servable(name) {
        return HttpResponse::NotFound().content_type("text/plain").body("not found\n");
    }
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let path = folder.join(name);
    match web::block(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => HttpResponse::Ok().content_type(content_type).insert_header(("Cache-Control", "no-cache")).body(bytes),
        _ => HttpResponse::NotFound().content_type("text/plain").body("not found\n"),
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    name: String,
}

/// `POST /demo/token {"name": n}` → `{"token": jwt}` for user `n`, or 400.
async fn token(services: web::Data<Services>, body: web::Bytes) -> HttpResponse {
    let Ok(TokenRequest { name }) = serde_json::from_slice::<TokenRequest>(&body) else {
        return bad_request("send {\"name\": \"...\"}");
    };
    if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return bad_request("a name is 1 to 32 characters of [A-Za-z0-9_.-]");
    }
    match services.auth.sign(&name, TOKEN_SECS) {
        Some(token) => HttpResponse::Ok().json(serde_json::json!({ "token": token })),
        None => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": "no key signs tokens" })),
    }
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::servable;

    #[test]
    fn only_plain_names_of_the_folder_are_served() {
        for good in ["index.html", "app.js", "client.js", "style.css", "a_b-c.js"] {
            assert!(servable(good), "{good}");
        }
        for bad in ["", ".env", "..", "../Cargo.toml", "a/b.js", "%2e%2e", "x\\y", &"a".repeat(65)] {
            assert!(!servable(bad), "{bad}");
        }
    }
}
