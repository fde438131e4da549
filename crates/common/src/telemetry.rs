//! Logs, traces and trace-context propagation.
//!
//! Logs are `tracing` events, JSON by default, each carrying the `trace_id` and
//! `span_id` of the request or event it belongs to. Spans are exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C `traceparent` travels in HTTP headers,
//! gRPC metadata (which is HTTP headers) and the `trace` field of event envelopes.

use std::collections::HashMap;
use std::sync::OnceLock;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber once per process: logs to stderr in the configured
/// format, and the OpenTelemetry layer (exporting over OTLP when configured).
/// Later calls do nothing, so tests and the one-process platform may call it freely.
pub fn init(service: &str, log: &LogConfig) -> anyhow::Result<()> {
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    if let Some(endpoint) = &endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("somagent");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .map_or_else(|| EnvFilter::try_new(&log.level), Ok)?;
    let fmt = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Traces are the spans and events at info and above. Unfiltered, the layer made
    // every library's debug and trace callsites live (h2 and hyper log each frame)
    // and recorded each as a span event with its thread and busy/idle times: about
    // 30 % of the platform's CPU on a streamed completion. Nothing reads the active
    // OpenTelemetry context (propagation reads the span's own), so spans do not
    // activate one on each poll either. With no exporter the spans still carry the
    // trace context (ids in logs, `traceparent` onwards) but events would only be
    // recorded on spans nobody reads, so they skip the layer.
    let exporting = endpoint.is_some();
    let traced = tracing_subscriber::filter::filter_fn(move |meta| {
        (exporting || meta.is_span()) && *meta.level() <= tracing::Level::INFO
    })
    // Without the hint the subscriber's most verbose level would be trace, and every
    // library's debug callsite would be asked about.
    .with_max_level_hint(tracing_subscriber::filter::LevelFilter::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(traced);
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init()
        .is_ok();
    if installed {
        let _ = PROVIDER.set(provider);
        if let Some(endpoint) = endpoint {
            tracing::info!(%endpoint, "exporting traces over OTLP");
        }
    }
    Ok(())
}

/// Exports the spans not exported yet; called once on shutdown.
///
/// The flush blocks until the exporter, which runs its gRPC calls on this runtime, is
/// done; it runs on a blocking thread so the runtime's workers stay free to drive them.
pub async fn shutdown() {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    match tokio::task::spawn_blocking(|| provider.force_flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "traces not exported before shutdown"),
        Err(e) => tracing::warn!(error = %e, "trace flush did not finish"),
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace context carried by `headers`, if any, and records
/// its trace and span ids in the span's `trace_id`/`span_id` fields (which the JSON
/// logs print).
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Same as [`adopt_remote_parent`] for a bare `traceparent` value (event envelopes).
pub fn adopt_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let mut headers = HeaderMap::new();
    if let Some(value) = traceparent.and_then(|v| v.parse().ok()) {
        headers.insert("traceparent", value);
    }
    adopt_remote_parent(span, &headers);
}

fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// Adds the current span's `traceparent` to outgoing headers (HTTP or gRPC metadata).
pub fn inject_current(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The current span's W3C `traceparent`, for an event envelope.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}
