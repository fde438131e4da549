//! What every engine offers: starting runs, their outcomes, and the operators' verbs
//! (list, describe, signal, cancel, query), each scoped to a tenant.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::tenant::TenantId;

use crate::error::ActivityError;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Value),
    Failed(ActivityError),
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub tenant: &'a TenantId,
    pub input: &'a Value,
}

/// A run, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub kind: String,
    pub tenant: TenantId,
    pub status: RunStatus,
    /// The run that started this one as its child.
    pub parent_id: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
}

/// One step of a run, as shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub seq: u64,
    /// `activity`, `sleep`, `signal`, `child` or `now`.
    pub kind: String,
    pub name: String,
    /// `completed`, `failed` or `running`.
    pub status: String,
    pub attempts: u32,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// A failed step's error, as a client may see it.
    pub error: Option<Value>,
}

/// A run in full: what it is, where it is, what it has done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// What the run is waiting on now, when the engine knows.
    pub current_step: Option<StepView>,
    pub steps: Vec<StepView>,
    /// The state the run last published (its query result).
    pub state: Option<Value>,
    pub result: Option<Value>,
    /// How it failed, as a client may see it.
    pub error: Option<Value>,
    pub cancel_requested: bool,
}

/// Which runs to list: a tenant's, optionally of one kind and status, newest first,
/// from a cursor (the `created_at` and id of the last run of the previous page).
#[derive(Debug, Clone)]
pub struct RunFilter {
    pub tenant: TenantId,
    pub kind: Option<String>,
    pub status: Option<RunStatus>,
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

impl RunFilter {
    /// A tenant's runs of every kind and status, newest first, a page of 50.
    pub fn of(tenant: TenantId) -> Self {
        Self {
            tenant,
            kind: None,
            status: None,
            before: None,
            limit: 50,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no workflow run `{0}`")]
    NotFound(String),
    #[error("workflow run `{0}` has ended")]
    Ended(String),
    #[error("no workflow is declared as `{0}`")]
    UnknownKind(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the workflow store failed: {0}")]
    Store(#[from] somagent_common::infra::db::DbError),
    #[error("the workflow engine failed: {0:#}")]
    Engine(anyhow::Error),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        EngineError::Store(e.into())
    }
}

impl From<EngineError> for somagent_common::error::ApiError {
    fn from(e: EngineError) -> Self {
        use somagent_common::error::{ApiError, ErrorCode};
        match &e {
            EngineError::NotFound(id) => ApiError::not_found(format!("workflow run `{id}`")),
            EngineError::Ended(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            EngineError::UnknownKind(_) => ApiError::validation("kind", e.to_string()),
            EngineError::Invalid(_) => ApiError::bad_request(e.to_string()),
            EngineError::Store(_) | EngineError::Engine(_) => {
                ApiError::unavailable("the workflow engine failed", anyhow::anyhow!(e.to_string()))
            }
        }
    }
}

/// Starts workflow runs and tells how they ended, on whichever engine is configured.
#[tonic::async_trait]
pub trait Engine: Send + Sync {
    /// `local` or `temporal`.
    fn name(&self) -> &'static str;

    /// Starts a run; a run with that id is left as it is (a retried start is
    /// idempotent). True if this call started it.
    async fn start(&self, start: StartRequest<'_>) -> Result<bool, EngineError>;

    /// The run's outcome, if it has ended. Not scoped: for the service that started it.
    async fn outcome(&self, id: &str) -> Result<Option<Outcome>, EngineError>;

    /// Sends signal `name` to a tenant's running run; kept until the run reads it.
    async fn signal(
        &self,
        tenant: &TenantId,
        id: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError>;

    /// Asks a tenant's running run to stop: its current wait fails with `cancelled`
    /// and its running activity is stopped.
    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<(), EngineError>;

    /// The state the run last published.
    async fn query(&self, tenant: &TenantId, id: &str) -> Result<Option<Value>, EngineError>;

    async fn describe(&self, tenant: &TenantId, id: &str) -> Result<RunView, EngineError>;

    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, EngineError>;

    /// Stops this process's part: runs held here stop at once and are left for the
    /// next process (the local engine gives up their leases; Temporal's worker stops
    /// polling). Nothing is marked ended.
    async fn shutdown(&self);

    /// A round trip to where the runs live (the local engine's database, Temporal's
    /// frontend): whether a run could start now.
    async fn ping(&self) -> Result<(), EngineError>;
}

/// An engine as a readiness check (`workflows` in `/readyz` and
/// `somagent_backend_ready`).
#[derive(Clone)]
pub struct EngineProbe(pub std::sync::Arc<dyn Engine>);

impl somagent_common::readiness::Probe for EngineProbe {
    async fn probe(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| format!("{e:#}"))
    }
}
