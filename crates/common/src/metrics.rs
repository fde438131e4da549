//! Prometheus metrics of one service, served on its `/metrics`.
//!
//! Each service owns a registry (so the one-process platform still shows each service
//! only its own series), labelled `service=<name>`. Metric names are constants here so
//! dashboards and alert rules in `deploy/` can rely on them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const HTTP_REQUESTS: &str = "http_requests";
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_REQUEST_ERRORS: &str = "http_request_errors";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteKey {
    pub method: String,
    pub route: String,
}

/// The request metrics every service has, plus its registry for domain metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<std::sync::Mutex<Registry>>,
    pub requests: Family<RouteLabels, Counter>,
    pub errors: Family<RouteLabels, Counter>,
    pub duration: Family<RouteKey, Histogram>,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "somagent",
            [("service".into(), service.to_owned().into())].into_iter(),
        );
        let requests = Family::<RouteLabels, Counter>::default();
        let errors = Family::<RouteLabels, Counter>::default();
        let duration = Family::<RouteKey, Histogram>::new_with_constructor(|| {
            // 100 µs to ~26 s: covers cached reads up to long LLM turns.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.5, 14,
            ))
        });
        registry.register(
            HTTP_REQUESTS,
            "Requests served, by route and status",
            requests.clone(),
        );
        registry.register(
            HTTP_REQUEST_ERRORS,
            "Requests answered with a 4xx or 5xx status, by route and status",
            errors.clone(),
        );
        registry.register(
            HTTP_REQUEST_DURATION,
            "Time to answer a request, by route",
            duration.clone(),
        );
        Self {
            registry: Arc::new(std::sync::Mutex::new(registry)),
            requests,
            errors,
            duration,
        }
    }

    /// Registers a domain metric beside the request metrics.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RouteLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        if status >= 400 {
            self.errors.get_or_create(&labels).inc();
        }
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&RouteKey {
                method: labels.method,
                route: labels.route,
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
