//! Readiness: the named checks of a service's backends, run concurrently with a
//! deadline each. `/readyz` answers 200 when all pass and 503 naming the ones that
//! failed. Each report also sets `somagent_backend_ready{backend}` (1 or 0), which the
//! service refreshes in the background too, so alerts see a backend fail without
//! anyone asking `/readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one check may take before it counts as failed.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// A backend that can say whether it answers (a round trip, not a cached flag).
pub trait Probe: Clone + Send + Sync + 'static {
    fn probe(&self) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    gauges: Option<Family<BackendLabels, Gauge>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    backend: &'static str,
}

/// How often a service checks its backends when nobody asks.
pub const REFRESH: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, String>,
}

impl Readiness {
    pub fn add<F, Fut>(&mut self, name: &'static str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name,
            Arc::new(move || Box::pin(check()) as BoxFuture<'static, _>),
        ));
    }

    /// Adds a check that probes `backend`.
    pub fn add_probe<P: Probe>(&mut self, name: &'static str, backend: P) {
        self.add(name, move || {
            let backend = backend.clone();
            async move { backend.probe().await }
        });
    }

    /// Reports each check as `backend_ready` on `metrics` from now on.
    pub fn observed_by(&mut self, metrics: &crate::metrics::Metrics) {
        let gauges = Family::<BackendLabels, Gauge>::default();
        metrics.register(
            "backend_ready",
            "Whether the backend answered the service's last readiness check (1) or not (0), by backend",
            gauges.clone(),
        );
        self.gauges = Some(gauges);
    }

    pub async fn report(&self) -> ReadinessReport {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let check = check.clone();
            async move {
                let outcome = match tokio::time::timeout(CHECK_DEADLINE, check()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {}s", CHECK_DEADLINE.as_secs())),
                };
                (*name, outcome)
            }
        }))
        .await;
        let ready = results.iter().all(|(_, r)| r.is_ok());
        if let Some(gauges) = &self.gauges {
            for (backend, outcome) in &results {
                gauges
                    .get_or_create(&BackendLabels { backend })
                    .set(i64::from(outcome.is_ok()));
            }
        }
        // Which backend failed is for everyone who asks; why (an address, a driver's
        // message) is for the logs only.
        let checks = results
            .into_iter()
            .map(|(name, r)| match r {
                Ok(()) => (name, "ok".to_owned()),
                Err(e) => {
                    tracing::warn!(check = name, error = %e, "not ready");
                    (name, "failed".to_owned())
                }
            })
            .collect();
        ReadinessReport { ready, checks }
    }
}
