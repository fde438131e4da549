//! What activities cost and how often they fail, by name, on either engine: both run
//! every attempt through [`crate::Registry::run_activity`], which records it here.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use somagent_common::metrics::Metrics;

use crate::ActivityError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    activity: String,
    /// `ok`, `retryable` (another attempt follows unless it was the last), `fatal` or
    /// `cancelled`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivityLabels {
    activity: String,
}

/// Activity metrics of one service, registered once on its `/metrics`.
#[derive(Clone)]
pub struct ActivityMetrics {
    attempts: Family<AttemptLabels, Counter>,
    retries: Family<ActivityLabels, Counter>,
    duration: Family<AttemptLabels, Histogram>,
}

impl ActivityMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            attempts: Family::default(),
            retries: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 1 ms to ~4.5 min: a cache read up to a long model call.
                Histogram::new(exponential_buckets(0.001, 2.5, 14))
            }),
        };
        metrics.register(
            "workflow_activity_attempts",
            "Activity attempts, by activity and outcome",
            this.attempts.clone(),
        );
        metrics.register(
            "workflow_activity_retries",
            "Activity attempts after the first, by activity",
            this.retries.clone(),
        );
        metrics.register(
            "workflow_activity_duration_seconds",
            "Time one activity attempt took, by activity and outcome",
            this.duration.clone(),
        );
        this
    }

    pub(crate) fn observe(
        &self,
        activity: &str,
        attempt: u32,
        took: Duration,
        result: &Result<serde_json::Value, ActivityError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.code == "cancelled" => "cancelled",
            Err(e) if e.retryable => "retryable",
            Err(_) => "fatal",
        };
        let labels = AttemptLabels {
            activity: activity.to_owned(),
            outcome,
        };
        self.attempts.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if attempt > 1 {
            self.retries
                .get_or_create(&ActivityLabels {
                    activity: activity.to_owned(),
                })
                .inc();
        }
    }
}
