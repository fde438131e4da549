//! The one error type of the platform's APIs: a stable code, a message for the caller,
//! optional structured details, and (never sent) the internal cause for the logs.
//!
//! Over HTTP it is the JSON problem `{"error": {"code", "message", "details"}}` with the
//! status its code implies; over gRPC it is a `tonic::Status` with the matching code and
//! the stable code in the `x-error-code` metadata entry.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Stable error codes, sent as `error.code`. Clients may branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be read: malformed JSON, wrong content type, bad query.
    BadRequest,
    /// The request was read but a field breaks a rule; `details` names the fields.
    ValidationFailed,
    /// No credentials, or credentials that are not valid.
    Unauthorized,
    /// Valid credentials that lack the capability the route needs.
    Forbidden,
    /// No such resource for this caller (also what another tenant's resource looks like).
    NotFound,
    /// The model a request names is not one the tenant may use; `details.models` lists
    /// those it may (OpenAI's `model_not_found`).
    ModelNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The change conflicts with what exists (a duplicate name, a stale version).
    Conflict,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// Too many requests; `Retry-After` says when to come back.
    RateLimited,
    /// The tenant's budget would be overspent.
    BudgetExhausted,
    /// A backend the request needs is down or not configured.
    Unavailable,
    /// The work took longer than its deadline.
    Timeout,
    /// A third-party API the call went to answered with a failure; `details.status`
    /// is its HTTP status (its body is not passed on: it may echo a secret).
    UpstreamFailed,
    /// Something failed inside; the logs hold the cause.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::ValidationFailed => "validation_failed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::ModelNotFound => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::UpstreamFailed => "upstream_failed",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::ModelNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BudgetExhausted => StatusCode::PAYMENT_REQUIRED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::BadRequest | Self::ValidationFailed => Code::InvalidArgument,
            Self::Unauthorized => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::NotFound | Self::ModelNotFound => Code::NotFound,
            Self::MethodNotAllowed => Code::Unimplemented,
            Self::Conflict => Code::AlreadyExists,
            Self::PayloadTooLarge => Code::OutOfRange,
            Self::RateLimited | Self::BudgetExhausted => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Timeout => Code::DeadlineExceeded,
            Self::UpstreamFailed => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The code for a bare HTTP error status (a framework's rejection), if one fits.
    pub fn of_status(status: StatusCode) -> Option<Self> {
        ALL.iter().copied().find(|c| c.status() == status)
    }
}

const ALL: [ErrorCode; 15] = [
    ErrorCode::BadRequest,
    ErrorCode::ValidationFailed,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::ModelNotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Conflict,
    ErrorCode::PayloadTooLarge,
    ErrorCode::RateLimited,
    ErrorCode::BudgetExhausted,
    ErrorCode::Unavailable,
    ErrorCode::Timeout,
    ErrorCode::UpstreamFailed,
    ErrorCode::Internal,
];

/// A fresh id for a failure whose cause goes to the log and not to the caller.
pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The metadata key that carries [`ErrorCode`] over gRPC.
pub const GRPC_CODE_KEY: &str = "x-error-code";
/// The gRPC metadata carrying a refusal's `Retry-After` seconds.
pub const RETRY_AFTER_KEY: &str = "x-retry-after";

#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// Seconds for `Retry-After` (rate limits, unavailable backends).
    pub retry_after: Option<u64>,
    /// The internal cause: logged, never sent.
    #[source]
    pub cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// A field-level validation failure; `details` lists `{field: message}`.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {message}"))
            .with_details(serde_json::json!({ "fields": { field: message } }))
    }

    /// An internal failure: the caller learns only that something failed, and a
    /// correlation id that finds the cause in the logs.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let id = correlation_id();
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                ErrorCode::Internal,
                format!("internal error (correlation id {id})"),
            )
            .with_details(serde_json::json!({ "correlation_id": id }))
        }
    }

    pub fn unavailable(message: impl Into<String>, cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(ErrorCode::Unavailable, message)
                .with_details(serde_json::json!({ "correlation_id": correlation_id() }))
        }
    }

    /// The id that ties this problem to its log line, if it has one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.details["correlation_id"].as_str()
    }

    fn log(&self) {
        if let Some(cause) = &self.cause {
            let id = self.correlation_id().unwrap_or_default();
            if self.code == ErrorCode::Internal {
                tracing::error!(error.code = self.code.as_str(), correlation_id = id, error.cause = ?cause, "{}", self.message);
            } else {
                tracing::warn!(error.code = self.code.as_str(), correlation_id = id, error.cause = %cause, "{}", self.message);
            }
        }
    }

    pub fn body(&self) -> Value {
        serde_json::json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.code.status(), Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.log();
        // The problem's details travel as the status's JSON details, so the gateway
        // answers with what the service said (the missing capability, the field, ...).
        let details = if error.details.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&error.details).unwrap_or_default()
        };
        let mut status =
            tonic::Status::with_details(error.code.grpc(), error.message, details.into());
        if let Ok(value) = error.code.as_str().parse() {
            status.metadata_mut().insert(GRPC_CODE_KEY, value);
        }
        if let Some(seconds) = error.retry_after {
            status
                .metadata_mut()
                .insert(RETRY_AFTER_KEY, seconds.into());
        }
        status
    }
}

impl From<tonic::Status> for ApiError {
    /// A service's answer, passed on by the gateway with its stable code intact.
    fn from(status: tonic::Status) -> Self {
        let code = status
            .metadata()
            .get(GRPC_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
            .unwrap_or_else(|| match status.code() {
                tonic::Code::InvalidArgument => ErrorCode::BadRequest,
                tonic::Code::Unauthenticated => ErrorCode::Unauthorized,
                tonic::Code::PermissionDenied => ErrorCode::Forbidden,
                tonic::Code::NotFound => ErrorCode::NotFound,
                tonic::Code::AlreadyExists => ErrorCode::Conflict,
                tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
                tonic::Code::Unavailable => ErrorCode::Unavailable,
                tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
                _ => ErrorCode::Internal,
            });
        if code == ErrorCode::Internal {
            // Keep what the other side said for the logs; the caller learns nothing but
            // the correlation id the other side logged its cause under.
            let mut error = Self::internal(anyhow::anyhow!("upstream: {status}"));
            let theirs = serde_json::from_slice::<Value>(status.details())
                .ok()
                .and_then(|d| d["correlation_id"].as_str().map(str::to_owned));
            if let Some(id) = theirs {
                error.message = format!("internal error (correlation id {id})");
                error.details = serde_json::json!({ "correlation_id": id });
            }
            return error;
        }
        let mut error = Self::new(code, status.message().to_owned());
        if !status.details().is_empty() {
            error.details = serde_json::from_slice(status.details()).unwrap_or_default();
        }
        error.retry_after = status
            .metadata()
            .get(RETRY_AFTER_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        error
    }
}

/// Maps a unique-constraint violation named `constraint` to a 409 with `message`;
/// any other database error stays internal.
///
/// PostgreSQL reports the constraint's name. SQLite reports only the columns
/// (`UNIQUE constraint failed: notes.tenant, notes.body`), so constraints follow the
/// naming convention `<table>_<column>_<column>…` (`notes_tenant_body`), which both
/// engines then match.
pub fn on_constraint(error: sqlx::Error, constraint: &str, message: &str) -> ApiError {
    if let sqlx::Error::Database(db) = &error {
        let hit = db.constraint() == Some(constraint)
            || (db.is_unique_violation()
                && sqlite_constraint_name(db.message()).as_deref() == Some(constraint));
        if hit {
            return ApiError::new(ErrorCode::Conflict, message);
        }
    }
    ApiError::internal(error)
}

/// `UNIQUE constraint failed: notes.tenant, notes.body` → `notes_tenant_body`.
fn sqlite_constraint_name(message: &str) -> Option<String> {
    let columns = message.strip_prefix("UNIQUE constraint failed: ")?;
    let mut table = None;
    let mut name = Vec::new();
    for qualified in columns.split(", ") {
        let (t, column) = qualified.split_once('.')?;
        table.get_or_insert(t);
        name.push(column);
    }
    Some(format!("{}_{}", table?, name.join("_")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in ALL {
            let status: tonic::Status = ApiError::new(code, "m").into();
            assert_eq!(status.code(), code.grpc());
            let back = ApiError::from(status);
            assert_eq!(back.code, code);
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::internal(anyhow::anyhow!("password=hunter2 rejected"));
        let body = error.body().to_string();
        assert!(!body.contains("hunter2"));
        assert_eq!(error.body()["error"]["code"], "internal");
        // The caller gets the id the cause was logged under, across a gRPC hop too.
        let id = error.correlation_id().unwrap().to_owned();
        assert!(body.contains(&id));
        let relayed = ApiError::from(tonic::Status::from(error));
        assert_eq!(relayed.correlation_id(), Some(id.as_str()));
        assert!(!relayed.body().to_string().contains("hunter2"));
    }

    #[test]
    fn validation_names_the_field() {
        let error = ApiError::validation("slug", "must be lowercase");
        assert_eq!(error.code.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            error.body()["error"]["details"]["fields"]["slug"],
            "must be lowercase"
        );
    }
}
