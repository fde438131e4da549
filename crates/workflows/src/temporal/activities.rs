//! The activity types the worker offers: every registry activity behind one type (its
//! name in the input), and the two steps that keep the runs index.

use somagent_common::tenant::TenantId;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError as SdkActivityError};
use tokio_util::sync::CancellationToken;

use super::failure::application_failure;
use crate::engine::RunStatus;
use crate::error::ActivityError;
use crate::registry::{ActivityInfo, Registry};
use crate::store::{NewRun, RunStore};

/// A registry activity to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub name: String,
    pub input: Value,
}

/// What it returned, and on which attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub output: Value,
    pub attempt: u32,
}

/// A child run, indexed by its first step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Indexed {
    pub id: String,
    pub tenant: TenantId,
    pub kind: String,
    pub parent: String,
    pub input: Value,
}

/// A run's end, recorded by its last step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub id: String,
    pub status: RunStatus,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub state: Option<Value>,
}

pub struct TemporalActivities {
    registry: Registry,
    runs: RunStore,
    runtime: tokio::runtime::Handle,
    /// Cancelled when this process stops: an attempt cancelled then was not cancelled by
    /// its run, and is handed back for another worker to retry.
    stopping: CancellationToken,
}

impl TemporalActivities {
    pub fn new(
        registry: Registry,
        runs: RunStore,
        runtime: tokio::runtime::Handle,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            registry,
            runs,
            runtime,
            stopping,
        }
    }
}

/// Aborts the attempt's task if the SDK drops the attempt (cancelled, or shutting down).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn sdk_error(e: &ActivityError) -> SdkActivityError {
    SdkActivityError::Application(Box::new(application_failure(e)))
}

fn store_error(e: impl std::fmt::Display) -> SdkActivityError {
    sdk_error(&ActivityError::retryable("unavailable", e.to_string()))
}

// The macro also declares a constant per activity, for typed calls.
#[activities]
impl TemporalActivities {
    #[activity(name = "somagent.activity")]
    pub async fn step(
        self: Arc<Self>,
        ctx: ActivityContext,
        call: Call,
    ) -> Result<Done, SdkActivityError> {
        let info = ActivityInfo {
            workflow_id: ctx.info().workflow_id.clone().unwrap_or_default(),
            name: call.name,
            attempt: ctx.info().attempt,
        };
        let attempt = info.attempt;
        let name = info.name.clone();
        let registry = self.registry.clone();
        // Run on the service's runtime, not the worker's thread.
        let mut work = self
            .runtime
            .spawn(async move { registry.run_activity(info, call.input).await });
        let _abort = AbortOnDrop(work.abort_handle());
        let beat = ctx.info().heartbeat_timeout.map(|timeout| timeout / 3);
        let joined = loop {
            tokio::select! {
                joined = &mut work => break joined,
                // A cancelled step stops here; dropping `work` aborts it.
                () = ctx.cancelled() => {
                    if self.stopping.is_cancelled() {
                        return Err(sdk_error(&ActivityError::retryable(
                            "unavailable",
                            "the worker running this step is stopping",
                        )));
                    }
                    return Err(SdkActivityError::cancelled());
                }
                () = tokio::time::sleep(beat.unwrap_or(std::time::Duration::from_secs(3600))) => {
                    if beat.is_some() && let Err(e) = ctx.record_heartbeat(()).await {
                        tracing::warn!(activity = %name, error = %e, "cannot record an activity heartbeat");
                    }
                }
            }
        };
        let result = joined.unwrap_or_else(|e| {
            Err(ActivityError::retryable(
                "internal",
                format!("the activity stopped: {e}"),
            ))
        });
        result
            .map(|output| Done { output, attempt })
            .map_err(|e| sdk_error(&e))
    }

    #[activity(name = "somagent.index")]
    pub async fn index(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: Indexed,
    ) -> Result<(), SdkActivityError> {
        let runs = self.runs.clone();
        self.runtime
            .spawn(async move {
                runs.insert(&NewRun {
                    id: &run.id,
                    tenant: &run.tenant,
                    kind: &run.kind,
                    engine: "temporal",
                    parent_id: Some(&run.parent),
                    input: &run.input,
                    lease: None,
                })
                .await
                .map(drop)
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)
    }

    #[activity(name = "somagent.finish")]
    pub async fn finish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: Ended,
    ) -> Result<(), SdkActivityError> {
        let runs = self.runs.clone();
        self.runtime
            .spawn(async move {
                runs.finish(
                    &run.id,
                    run.status,
                    run.result.as_ref(),
                    run.error.as_ref(),
                    run.state.as_ref(),
                )
                .await
                .map(drop)
            })
            .await
            .map_err(store_error)?
            .map_err(store_error)
    }
}
