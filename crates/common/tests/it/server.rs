use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use somagent_common::metrics::Metrics;
use somagent_common::readiness::Readiness;
use somagent_common::server;

fn router(readiness: Readiness) -> axum::Router {
    server::router(
        "probe",
        axum::Router::new(),
        tonic::service::Routes::default(),
        readiness,
        Metrics::new("probe"),
    )
}

async fn json(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn readiness_names_the_backend_that_failed() {
    let mut readiness = Readiness::default();
    readiness.add("database", || async { Ok(()) });
    readiness.add("cache", || async { Err("connection refused".to_owned()) });
    let response = router(readiness)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(response).await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["cache"], "failed");
    assert!(
        !body.to_string().contains("connection refused"),
        "a backend's error text stays in the logs: {body}"
    );
}

#[tokio::test]
async fn a_hung_backend_counts_as_not_ready() {
    let mut readiness = Readiness::default();
    readiness.add("events", || async {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        Ok(())
    });
    let response = router(readiness)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(response).await["checks"]["events"], "failed");
}

#[tokio::test]
async fn request_ids_are_echoed_and_unknown_routes_are_problems() {
    let app = router(Readiness::default());
    let response = app
        .clone()
        .oneshot(
            Request::get("/v1/nope")
                .header("x-request-id", "req-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nope")
    );
    // A gRPC call to a method nobody serves gets a gRPC status, not an HTTP 404.
    let grpc = app
        .oneshot(
            Request::post("/somagent.identity.v1.IdentityService/GetTenant")
                .header("content-type", "application/grpc")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "12");
}

#[tokio::test]
async fn a_callers_trace_continues_into_the_events_it_causes() {
    use somagent_common::config::{LogConfig, LogFormat};
    use somagent_common::infra::events::Envelope;
    use somagent_common::telemetry;

    let quiet = LogConfig {
        format: LogFormat::Json,
        level: "off".into(),
    };
    telemetry::init("test", &quiet).unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let span = tracing::info_span!(
        "request",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty
    );
    telemetry::adopt_remote_parent(&span, &headers);
    let tenant = somagent_common::tenant::TenantId::parse("acme").unwrap();
    let event =
        span.in_scope(|| Envelope::new("test.caused", "probe", tenant, serde_json::json!({})));
    let trace = event.trace.expect("the event carries a traceparent");
    assert!(trace.starts_with(&format!("00-{trace_id}-")), "{trace}");
    // The outgoing parent is this service's span, not the caller's.
    assert!(!trace.contains("00f067aa0ba902b7"), "{trace}");
}

/// What the framework refuses before a handler runs is the same JSON problem every
/// handler answers with, keeping its status and headers.
#[tokio::test]
async fn framework_rejections_are_problems_too() {
    #[derive(serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }
    let routes = axum::Router::new()
        .route(
            "/v1/items",
            axum::routing::get(|_: axum::extract::Query<Page>| async { "listed" })
                .post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(1024));
    let app = server::router(
        "probe",
        routes,
        tonic::service::Routes::default(),
        Readiness::default(),
        Metrics::new("probe"),
    );
    let send = |request: Request<Body>| app.clone().oneshot(request);

    let response = send(
        Request::get("/v1/items?limit=many")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("limit"),
        "{body}"
    );

    let response = send(Request::delete("/v1/items").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key("allow"));
    assert_eq!(json(response).await["error"]["code"], "method_not_allowed");

    let response = send(
        Request::post("/v1/items")
            .body(Body::from(vec![b'x'; 4096]))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(response).await["error"]["code"], "payload_too_large");

    // Successes pass untouched.
    let response = send(
        Request::get("/v1/items?limit=3")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
