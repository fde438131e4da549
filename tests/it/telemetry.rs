//! Traces leave the process over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and a
//! caller's W3C trace context is continued, not replaced.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;

use crate::helpers::{command, free_ports, wait_ok};

/// A minimal OTLP/gRPC collector that hands every export to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

// Multi-threaded: the collector must answer while this test waits for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp_in_the_callers_trace() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let router =
        tonic::service::Routes::new(TraceServiceServer::new(Collector(tx))).into_axum_router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let mut child = command("somagent-identity", &ports)
        .env("SOMAGENT_DATA_DIR", data.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", ports["identity"]);
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("{base}/healthz")).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = client
        .get(format!("{base}/v1/tenants"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // SIGTERM flushes the spans not exported yet.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());

    let wanted = hex(trace_id);
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(export) = rx.recv().await {
            for resource in &export.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value));
                for scope in &resource.scope_spans {
                    if let Some(span) = scope.spans.iter().find(|s| s.trace_id == wanted) {
                        return (service, span.name.clone(), span.parent_span_id.clone());
                    }
                }
            }
        }
        panic!("the collector closed");
    })
    .await
    .expect("a span of the caller's trace reached the collector");
    assert!(
        found.0.as_deref().unwrap_or_default().contains("identity"),
        "service.name: {found:?}"
    );
    assert_eq!(found.1, "request");
    assert_eq!(
        found.2,
        hex("b7ad6b7169203331"),
        "the caller's span is the parent"
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
