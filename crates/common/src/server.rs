//! One port per service: its HTTP routes, its gRPC services and the operational
//! endpoints (`/healthz`, `/readyz`, `/metrics`) on one listener, with request spans,
//! request metrics, a JSON 404 and graceful shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::telemetry;

/// Why a listener could not be had, said in one line.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {service}: {reason}")]
pub struct BindError {
    pub service: String,
    pub addr: SocketAddr,
    pub reason: String,
}

/// Binds `addr` for `service`, turning the OS error into a line a person understands.
pub async fn bind(service: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError {
        service: service.to_owned(),
        addr,
        reason: match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the port is already taken by another process (set ports.<service> or stop it)"
                    .into()
            }
            std::io::ErrorKind::PermissionDenied => "permission denied".into(),
            std::io::ErrorKind::AddrNotAvailable => "no such local address".into(),
            _ => e.to_string(),
        },
    })
}

#[derive(Clone)]
struct Ops {
    service: &'static str,
    readiness: Readiness,
    metrics: Metrics,
}

/// Assembles the service's router: its own HTTP routes and gRPC routes, the
/// operational endpoints, the JSON 404 fallback and the request middleware.
pub fn router(
    service: &'static str,
    http: Router,
    grpc: tonic::service::Routes,
    readiness: Readiness,
    metrics: Metrics,
) -> Router {
    let ops = Ops {
        service,
        readiness,
        metrics: metrics.clone(),
    };
    let operational = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(ops);
    operational
        .merge(http)
        .merge(grpc.prepare().into_axum_router())
        .fallback(not_found)
        .layer(middleware::from_fn(problem_responses))
        .layer(middleware::from_fn_with_state((service, metrics), observe))
}

async fn healthz(State(ops): State<Ops>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "service": ops.service }))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let report = ops.readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if report.ready { "ready" } else { "not_ready" },
        "service": ops.service,
        "checks": report.checks,
    });
    (status, axum::Json(body)).into_response()
}

async fn prometheus(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.encode(),
    )
}

async fn not_found(request: Request) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        // A gRPC client expects a gRPC status, not an HTTP 404 page.
        return tonic::Status::unimplemented(format!("no method {}", request.uri().path()))
            .into_http::<Body>()
            .into_response();
    }
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

/// Turns an error response that is not already a JSON problem (a framework's plain-text
/// rejection of a bad query string or an oversized body, an empty 405) into the one
/// problem format, keeping its status and headers (`Allow`, `Retry-After`). Handlers
/// answer problems themselves; this catches what is refused before a handler runs.
async fn problem_responses(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json")
        || content_type.starts_with("application/problem+json")
        || content_type.starts_with("application/grpc")
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("request refused");
    let message = if status.is_server_error() {
        // Whatever failed outside a handler is not for the caller to read.
        reason.to_owned()
    } else {
        axum::body::to_bytes(body, 2048)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| reason.to_owned())
    };
    let code = ErrorCode::of_status(status).unwrap_or_else(|| {
        if status.is_server_error() {
            ErrorCode::Internal
        } else {
            ErrorCode::BadRequest
        }
    });
    let problem = ApiError::new(code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, problem_body)
}

/// Wraps each request in a span that continues the caller's trace, logs its outcome
/// and records it in the request metrics.
async fn observe(
    State((service, metrics)): State<(&'static str, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        service,
        method = %method,
        route = %route,
        request_id = %request_id,
        tenant = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::adopt_remote_parent(&span, request.headers());
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics.observe(&method, &route, status, elapsed.as_secs_f64());
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    let quiet = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    span.in_scope(|| {
        let micros = elapsed.as_micros() as u64;
        if status >= 500 {
            tracing::warn!(status, micros, "request failed");
        } else if quiet {
            tracing::debug!(status, micros, "request served");
        } else {
            tracing::info!(status, micros, "request served");
        }
    });
    response
}

/// Serves `router` on `listener` until `token` is cancelled, then lets in-flight
/// requests finish for up to `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    token: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Streamed answers go out as they are written, not held back by Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // Handlers may ask for the peer address (`ConnectInfo<SocketAddr>`): rate limits.
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(token.clone().cancelled_owned())
    .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing");
            Ok(())
        }
    }
}
