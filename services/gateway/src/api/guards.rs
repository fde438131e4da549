//! The public door's guards: CORS for the browser origins configured in
//! `gateway.cors_origins` (comma-separated; none by default), a body size limit, and
//! a deadline per request, each refusing with a JSON problem.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use somagent_common::error::{ApiError, ErrorCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The largest request body the public API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long one request may take before the caller gets a 504.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_BODY_BYTES)
}

/// CORS for the configured origins only; with none configured, no cross-origin access.
pub fn cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600))
}

/// Ends a request that takes longer than [`REQUEST_DEADLINE`] with a 504 problem.
pub async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(ErrorCode::Timeout, "the request took too long").into_response(),
    }
}
