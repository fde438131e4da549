//! What operators watch of the upstreams: attempts and failures per profile, the
//! `SomagentModelUpstreamFailing` alert's ratio.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use somagent_common::metrics::Metrics;

use super::FailureKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    profile: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    profile: String,
    upstream: String,
    kind: &'static str,
}

#[derive(Clone)]
pub struct UpstreamMetrics {
    attempts: Family<AttemptLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

impl UpstreamMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            attempts: Family::default(),
            failures: Family::default(),
        };
        metrics.register(
            "model_upstream_attempts",
            "Calls slm made to a model upstream (each retry and fallback counts), by profile",
            this.attempts.clone(),
        );
        metrics.register(
            "model_upstream_failures",
            "Upstream calls that failed, by profile and kind (transient, timeout, rejected, busy)",
            this.failures.clone(),
        );
        this
    }

    /// One attempt on `profile`, and whether it failed.
    pub fn attempted(&self, profile: &str, upstream: &str, failed: Option<FailureKind>) {
        let labels = AttemptLabels {
            profile: profile.to_owned(),
            upstream: upstream.to_owned(),
        };
        self.attempts.get_or_create(&labels).inc();
        if let Some(kind) = failed {
            self.failures
                .get_or_create(&FailureLabels {
                    profile: labels.profile,
                    upstream: labels.upstream,
                    kind: kind.as_str(),
                })
                .inc();
        }
    }
}
