//! The server API's error type: every failure becomes a status and a JSON body
//! `{"error": message}` that says what to fix and never how Herald failed inside.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Why an API request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// `api.key` is empty: the API is off (403).
    #[error("the server API is disabled: set api.key to enable it")]
    Disabled,
    /// No `Authorization: Bearer` header, or the wrong key (401).
    #[error("missing or wrong API key: send Authorization: Bearer <api.key>")]
    Unauthorized,
    /// The body or a path segment is malformed; the message names the field (400).
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// The body is longer than `limits.max_message_bytes` (413).
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// No such route under `/api` (404).
    #[error("no such API route")]
    NotFound,
    /// The route exists, the thing it names does not (404).
    #[error("{0}")]
    NoSuch(&'static str),
    /// The route exists with another method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The body did not arrive within `server.handshake_timeout_ms` (408);
    /// the connection is closed.
    #[error("the request body took too long")]
    Timeout,
    /// A room or presence actor did not answer (503); the request may be retried.
    #[error("the node is busy, try again")]
    Unavailable,
}

impl ApiError {
    pub(crate) fn bad_request(message: &'static str) -> Self {
        Self::BadRequest(Cow::Borrowed(message))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound | Self::NoSuch(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_response(self.status_code(), &self.to_string());
        if matches!(self, Self::Timeout) {
            // The rest of the body may never come: the connection cannot be reused.
            response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        }
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON error body, `{"error": message}`, with `status`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}
