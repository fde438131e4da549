//! Request bodies: what a JSON body that cannot be read answers, the same on every route.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use somagent_common::error::{ApiError, ErrorCode};

/// A body that is not the expected JSON is a 400 (unreadable) or 422 (wrong fields).
/// Handlers take `Result<Json<T>, JsonRejection>` and call this, so the error is the
/// API's `{"error": ...}` rather than axum's plain-text rejection.
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::JsonDataError(e)) => {
            Err(ApiError::new(ErrorCode::ValidationFailed, e.body_text()))
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request body is too large",
        )),
        Err(e) => Err(ApiError::bad_request(e.body_text())),
    }
}
