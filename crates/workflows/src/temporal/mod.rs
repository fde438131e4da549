//! The Temporal engine: the same workflows and activities, run by a worker on the
//! official Rust SDK. Temporal keeps each run's history, its timers and the signals sent
//! to it, times out and retries its activities, cancels them, and hands a run to another
//! worker when its worker dies; a start with an id that exists is refused by the server,
//! so a retried start is idempotent.
//!
//! The SDK registers workflow and activity types at compile time, and the engine knows
//! no workflow: every run is one Temporal workflow type, `somagent.workflow`, whose input
//! names the registry's workflow ([`workflow`]); every activity is one activity type,
//! `somagent.activity`, whose input names the registry's activity and whose summary
//! shows that name in Temporal's UI ([`activities`]). Signals are one signal type that
//! carries a name, buffered in the run's state until a wait takes them; the published
//! state, steps and current step are one query.
//!
//! Runs are also indexed in the service's store ([`RunStore`]), by tenant, for the
//! operators' API: a top-level run when it is started, a child by its first step, and
//! every run's end by its last.

mod activities;
mod failure;
mod workflow;

use somagent_common::tenant::TenantId;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use somagent_common::config::TemporalTarget;
use temporalio_client::errors::{
    WorkflowGetResultError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCancelOptions,
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
    WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::engine::{
    Engine, EngineError, Outcome, RunFilter, RunStatus, RunSummary, RunView, StartRequest,
};
use crate::error::ActivityError;
use crate::registry::Registry;
use crate::store::{NewRun, RunStore};

use self::activities::TemporalActivities;
use self::workflow::{Envelope, Message, Start, View};

/// How long a workflow task waits on the worker that ran the run's last task (and
/// caches its state) before any worker may take it: short, so a restarted process picks
/// its runs up quickly.
const STICKY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stopping worker lets running activities finish before it cancels them;
/// another worker retries them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub struct TemporalEngine {
    client: Client,
    task_queue: String,
    registry: Registry,
    runs: RunStore,
    stop_worker: Box<dyn Fn() + Send + Sync>,
    stopping: CancellationToken,
    /// Resolves when the worker has stopped.
    stopped: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl TemporalEngine {
    /// Connects to Temporal and starts a worker for `registry` on the target's task
    /// queue, indexing runs in `runs` (migrated with [`crate::MIGRATIONS`]). Fails if
    /// Temporal cannot be reached or the worker cannot start, so a misconfigured service
    /// does not come up.
    pub async fn start(
        target: &TemporalTarget,
        identity: &str,
        registry: Registry,
        runs: RunStore,
    ) -> anyhow::Result<std::sync::Arc<Self>> {
        let client = connect(target, identity).await?;
        let mut options = WorkerOptions::new(target.task_queue.clone())
            .sticky_queue_schedule_to_start_timeout(STICKY_TIMEOUT)
            .graceful_shutdown_period(SHUTDOWN_GRACE)
            .build();
        let for_workflows = registry.clone();
        options.register_workflow_with_factory::<Envelope, _>(move || {
            Envelope::new(for_workflows.clone())
        })?;
        let stopping = CancellationToken::new();
        options.register_activities(TemporalActivities::new(
            registry.clone(),
            runs.clone(),
            tokio::runtime::Handle::current(),
            stopping.clone(),
        ));

        // The SDK's worker future is not Send: it runs on a thread of its own, on a
        // current-thread runtime; activities are sent back to the service's runtime.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let worker_client = client.clone();
        std::thread::Builder::new()
            .name("temporal-worker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let worker = Runtime::from_current_tokio(Default::default())
                        .map_err(anyhow::Error::from)
                        .and_then(|runtime| {
                            Worker::new(&runtime, worker_client, options)
                                .map(|worker| (runtime, worker))
                                .map_err(anyhow::Error::from)
                        });
                    let (_runtime, mut worker) = match worker {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(
                        Box::new(worker.shutdown_handle()) as Box<dyn Fn() + Send + Sync>
                    ));
                    if let Err(e) = worker.run().await {
                        tracing::error!(error = %e, "the Temporal worker stopped");
                    }
                    let _ = stopped_tx.send(());
                });
            })
            .context("cannot start the Temporal worker thread")?;
        let stop_worker = ready_rx
            .await
            .context("the Temporal worker thread ended before it started")?
            .context("cannot start the Temporal worker")?;
        tracing::info!(task_queue = %target.task_queue, namespace = %target.namespace, "Temporal worker started");
        Ok(std::sync::Arc::new(Self {
            client,
            task_queue: target.task_queue.clone(),
            registry,
            runs,
            stop_worker,
            stopping,
            stopped: Mutex::new(Some(stopped_rx)),
        }))
    }

    fn handle(&self, id: &str) -> temporalio_client::WorkflowHandle<Client, Envelope> {
        self.client.get_workflow_handle::<Envelope>(id.to_owned())
    }

    /// The run's status on the server; `None` if the server has no such run.
    async fn server_status(&self, id: &str) -> Result<Option<RunStatus>, EngineError> {
        let status = match self
            .handle(id)
            .describe(WorkflowDescribeOptions::default())
            .await
        {
            Ok(description) => description.status(),
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(engine_error(e, "cannot describe a workflow run")),
        };
        Ok(Some(match status {
            WorkflowExecutionStatus::Completed => RunStatus::Completed,
            WorkflowExecutionStatus::Canceled => RunStatus::Cancelled,
            WorkflowExecutionStatus::Failed
            | WorkflowExecutionStatus::Terminated
            | WorkflowExecutionStatus::TimedOut => RunStatus::Failed,
            // Continued-as-new runs do not happen here; the rest are still on.
            _ => RunStatus::Running,
        }))
    }

    /// How the run ended, from the server; `None` while it runs.
    async fn server_outcome(&self, id: &str) -> Result<Option<Outcome>, EngineError> {
        match self.server_status(id).await? {
            None | Some(RunStatus::Running) => return Ok(None),
            Some(RunStatus::Cancelled) => return Ok(Some(Outcome::Cancelled)),
            Some(_) => {}
        }
        Ok(Some(
            match self
                .handle(id)
                .get_result(WorkflowGetResultOptions::default())
                .await
            {
                Ok(value) => Outcome::Completed(value),
                Err(WorkflowGetResultError::Failed(error)) => {
                    Outcome::Failed(failure::activity_error(error.failure()))
                }
                Err(WorkflowGetResultError::Cancelled { .. }) => Outcome::Cancelled,
                Err(WorkflowGetResultError::NotFound(_)) => return Ok(None),
                Err(other) => {
                    Outcome::Failed(ActivityError::fatal("workflow_ended", other.to_string()))
                }
            },
        ))
    }

    /// The run's view (published state, steps, current step) from its workflow.
    async fn view(&self, id: &str) -> Result<View, EngineError> {
        match self
            .handle(id)
            .query(Envelope::view, (), WorkflowQueryOptions::default())
            .await
        {
            Ok(view) => Ok(serde_json::from_value(view).unwrap_or_default()),
            Err(WorkflowQueryError::NotFound(_)) => Err(EngineError::NotFound(id.to_owned())),
            Err(e) => Err(EngineError::Engine(
                anyhow::Error::new(e).context("cannot query a workflow run"),
            )),
        }
    }

    /// The tenant's run, its index row brought up to date with the server if the run
    /// ended without its last step recording it (terminated, timed out).
    async fn scoped(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<crate::store::RunRow, EngineError> {
        let mut run = self.runs.get_scoped(tenant, id).await?;
        if run.summary.status == RunStatus::Running {
            self.reconcile(id).await?;
            run = self.runs.get_scoped(tenant, id).await?;
        }
        Ok(run)
    }

    async fn reconcile(&self, id: &str) -> Result<(), EngineError> {
        let Some(outcome) = self.server_outcome(id).await? else {
            return Ok(());
        };
        let (status, result, error) = match outcome {
            Outcome::Completed(value) => (RunStatus::Completed, Some(value), None),
            Outcome::Cancelled => (RunStatus::Cancelled, None, None),
            Outcome::Failed(e) => (RunStatus::Failed, None, serde_json::to_value(&e).ok()),
        };
        self.runs
            .finish(id, status, result.as_ref(), error.as_ref(), None)
            .await?;
        Ok(())
    }
}

impl Drop for TemporalEngine {
    fn drop(&mut self) {
        (self.stop_worker)();
    }
}

async fn connect(target: &TemporalTarget, identity: &str) -> anyhow::Result<Client> {
    let url: Url = target
        .address
        .parse()
        .with_context(|| format!("bad Temporal address `{}`", target.address))?;
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(identity.to_owned())
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .with_context(|| format!("cannot reach Temporal at {}", target.address))?;
    Ok(Client::new(
        connection,
        ClientOptions::new(target.namespace.clone()).build(),
    )?)
}

fn engine_error(e: impl std::error::Error + Send + Sync + 'static, what: &str) -> EngineError {
    EngineError::Engine(anyhow::Error::new(e).context(what.to_owned()))
}

#[tonic::async_trait]
impl Engine for std::sync::Arc<TemporalEngine> {
    fn name(&self) -> &'static str {
        "temporal"
    }

    async fn ping(&self) -> Result<(), EngineError> {
        // A describe of a run that never exists: "not found" is the frontend answering.
        self.server_status("somagent-readiness-probe")
            .await
            .map(drop)
    }

    async fn start(&self, start: StartRequest<'_>) -> Result<bool, EngineError> {
        if !self.registry.knows(start.kind) {
            return Err(EngineError::UnknownKind(start.kind.to_owned()));
        }
        // Indexed first, so a run on the server is always on the index; a start that
        // failed after this leaves a row the retried start finds.
        self.runs
            .insert(&NewRun {
                id: start.id,
                tenant: start.tenant,
                kind: start.kind,
                engine: "temporal",
                parent_id: None,
                input: start.input,
                lease: None,
            })
            .await?;
        let options = WorkflowStartOptions::new(self.task_queue.clone(), start.id.to_owned())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        let envelope = Start {
            kind: start.kind.to_owned(),
            tenant: start.tenant.to_owned(),
            input: start.input.clone(),
            parent: None,
        };
        match self
            .client
            .start_workflow(Envelope::run, envelope, options)
            .await
        {
            Ok(_) => Ok(true),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(false),
            Err(e) => Err(engine_error(e, "cannot start a workflow run on Temporal")),
        }
    }

    async fn outcome(&self, id: &str) -> Result<Option<Outcome>, EngineError> {
        self.server_outcome(id).await
    }

    async fn signal(
        &self,
        tenant: &TenantId,
        id: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let run = self.scoped(tenant, id).await?;
        if run.summary.status != RunStatus::Running {
            return Err(EngineError::Ended(id.to_owned()));
        }
        let message = Message {
            name: name.to_owned(),
            payload,
        };
        match self
            .handle(id)
            .signal(Envelope::receive, message, WorkflowSignalOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            // It ended between the two calls.
            Err(WorkflowInteractionError::NotFound(_)) => Err(EngineError::Ended(id.to_owned())),
            Err(e) => Err(engine_error(e, "cannot signal a workflow run")),
        }
    }

    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<(), EngineError> {
        self.scoped(tenant, id).await?;
        self.runs.request_cancel(tenant, id).await?;
        match self
            .handle(id)
            .cancel(WorkflowCancelOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(WorkflowInteractionError::NotFound(_)) => Err(EngineError::Ended(id.to_owned())),
            Err(e) => Err(engine_error(e, "cannot cancel a workflow run")),
        }
    }

    async fn query(&self, tenant: &TenantId, id: &str) -> Result<Option<Value>, EngineError> {
        let run = self.scoped(tenant, id).await?;
        if run.summary.status != RunStatus::Running {
            return Ok(run.state);
        }
        Ok(self.view(id).await?.state)
    }

    async fn describe(&self, tenant: &TenantId, id: &str) -> Result<RunView, EngineError> {
        let run = self.scoped(tenant, id).await?;
        // A closed run's view is its history replayed by a worker; without one, the
        // index row still tells how it ended.
        let view = match self.view(id).await {
            Ok(view) => view,
            Err(e) if run.summary.status == RunStatus::Running => return Err(e),
            Err(e) => {
                tracing::debug!(run = %id, error = %e, "an ended run's steps cannot be read");
                View::default()
            }
        };
        let running = run.summary.status == RunStatus::Running;
        Ok(RunView {
            summary: run.summary,
            current_step: if running { view.current } else { None },
            steps: view
                .steps
                .into_iter()
                .map(|mut step| {
                    step.error = step.error.as_ref().map(ActivityError::public_of);
                    step
                })
                .collect(),
            state: if running {
                view.state
            } else {
                run.state.or(view.state)
            },
            result: run.result,
            error: run.error.as_ref().map(ActivityError::public_of),
            cancel_requested: run.cancel_requested,
        })
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, EngineError> {
        self.runs.list(filter).await
    }

    async fn shutdown(&self) {
        self.stopping.cancel();
        (self.stop_worker)();
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stopped) = stopped
            && tokio::time::timeout(SHUTDOWN_GRACE * 3, stopped)
                .await
                .is_err()
        {
            tracing::warn!("the Temporal worker did not stop within the grace period");
        }
    }
}
