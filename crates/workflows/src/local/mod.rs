//! The local engine: a run is a tokio task; every step's answer is journaled in the
//! service's relational store before the workflow sees it; a run is held by one process
//! at a time through a lease it renews; after a crash (or a shutdown, which gives the
//! leases up at once), another start or another replica replays the run from its
//! journal and carries on from the first step without an answer.
//!
//! Timers and signal waits fix their deadline at the first ask (`wf_waits`), so a
//! restart does not start them again; signals are rows (`wf_signals`) kept until a wait
//! takes one, in the same transaction that journals it; a child is a run of its own,
//! started once by id and awaited; a cancel is a flag on the run that the holding
//! process sees at once (same process) or at its next lease renewal (another replica).

mod context;
mod journal;

use somagent_common::tenant::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::Db;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Ctx;
use crate::engine::{
    Engine, EngineError, Outcome, RunFilter, RunStatus, RunSummary, RunView, StartRequest, StepView,
};
use crate::error::ActivityError;
use crate::registry::Registry;
use crate::store::{NewRun, RunStore};

use self::context::LocalContext;
use self::journal::Journal;

/// How long a run stays with the process that holds it without a renewal.
const LEASE: Duration = Duration::from_secs(10);
/// How often a holder renews its leases, and so how soon it sees a cancel or a signal
/// sent through another replica.
const RENEW_EVERY: Duration = Duration::from_millis(3_000);
/// How often a wait looks at the store for what another process may have written
/// (signals, a child's end); within the process it is woken at once.
const POLL: Duration = Duration::from_millis(500);
/// How long shutdown waits for runs to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A run this process holds.
struct Held {
    cancel: CancellationToken,
    current: Option<StepView>,
    state: Option<Value>,
    /// The state was published since it was last written.
    unwritten: bool,
}

pub struct LocalEngine {
    runs: RunStore,
    journal: Journal,
    registry: Registry,
    /// This process, as lease holder.
    owner: String,
    held: Mutex<HashMap<String, Held>>,
    /// Run ids, as runs end here.
    finished: broadcast::Sender<String>,
    /// Run ids, as signals for them are sent here.
    signalled: broadcast::Sender<String>,
    tasks: TaskTracker,
    stopping: CancellationToken,
}

impl LocalEngine {
    /// The engine over `db` (migrated with [`crate::MIGRATIONS`]) for `registry`. Call
    /// [`LocalEngine::keep_resuming`] to take over runs a previous process left.
    pub fn new(db: Db, registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            runs: RunStore::new(db.clone()),
            journal: Journal::new(db),
            registry,
            owner: uuid::Uuid::new_v4().to_string(),
            held: Mutex::default(),
            finished: broadcast::channel(1024).0,
            signalled: broadcast::channel(1024).0,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start_run(
        self: &Arc<Self>,
        start: &StartRequest<'_>,
        parent: Option<&str>,
    ) -> Result<bool, EngineError> {
        if !self.registry.knows(start.kind) {
            return Err(EngineError::UnknownKind(start.kind.to_owned()));
        }
        if self.stopping.is_cancelled() {
            return Err(EngineError::Engine(anyhow::anyhow!(
                "the engine is shutting down"
            )));
        }
        let inserted = self
            .runs
            .insert(&NewRun {
                id: start.id,
                tenant: start.tenant,
                kind: start.kind,
                engine: "local",
                parent_id: parent,
                input: start.input,
                lease: Some((&self.owner, unix_now_ms() + LEASE.as_millis() as i64)),
            })
            .await?;
        if inserted {
            self.spawn(
                start.id.to_owned(),
                start.kind.to_owned(),
                start.tenant.to_owned(),
                start.input.clone(),
                false,
            );
        }
        Ok(inserted)
    }

    /// Takes over every running run whose lease has lapsed (its process died or gave it
    /// up) and carries it on. Called at start and then periodically.
    pub async fn resume_orphans(self: &Arc<Self>) -> Result<usize, EngineError> {
        let mut resumed = 0;
        for orphan in self.journal.orphans(unix_now_ms()).await? {
            let claimed = self
                .journal
                .claim(
                    &orphan.id,
                    &self.owner,
                    unix_now_ms() + LEASE.as_millis() as i64,
                )
                .await?;
            if claimed && !self.stopping.is_cancelled() {
                tracing::info!(run = %orphan.id, kind = %orphan.kind, "resuming a workflow run from its journal");
                self.spawn(
                    orphan.id,
                    orphan.kind,
                    orphan.tenant,
                    orphan.input,
                    orphan.cancel_requested,
                );
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Resumes orphaned runs every few seconds until shutdown.
    pub fn keep_resuming(self: &Arc<Self>) {
        let engine = self.clone();
        self.tasks.spawn(async move {
            loop {
                if let Err(e) = engine.resume_orphans().await {
                    tracing::warn!(error = %e, "cannot look for workflow runs to resume");
                }
                tokio::select! {
                    () = engine.stopping.cancelled() => return,
                    () = tokio::time::sleep(LEASE / 2) => {}
                }
            }
        });
    }

    fn spawn(
        self: &Arc<Self>,
        id: String,
        kind: String,
        tenant: TenantId,
        input: Value,
        cancelled: bool,
    ) {
        let engine = self.clone();
        let cancel = CancellationToken::new();
        if cancelled {
            cancel.cancel();
        }
        self.held().insert(
            id.clone(),
            Held {
                cancel: cancel.clone(),
                current: None,
                state: None,
                unwritten: false,
            },
        );
        self.tasks.spawn(async move {
            let lost = CancellationToken::new();
            let renewing = engine.tasks.spawn(engine.clone().renew_lease(id.clone(), lost.clone()));
            tokio::select! {
                () = engine.stopping.cancelled() => {}
                () = lost.cancelled() => {
                    tracing::warn!(run = %id, "another process took this workflow run over; stopping here");
                }
                () = engine.run(&id, &kind, &tenant, input, cancel) => {}
            }
            renewing.abort();
            engine.held().remove(&id);
        });
    }

    async fn run(
        self: &Arc<Self>,
        id: &str,
        kind: &str,
        tenant: &TenantId,
        input: Value,
        cancel: CancellationToken,
    ) {
        let Some(workflow) = self.registry.workflow_fn(kind) else {
            tracing::error!(run = %id, %kind, "no such workflow here; the run is left for a process that knows it");
            return;
        };
        let journal = match self.journal.load(id).await {
            Ok(journal) => journal,
            Err(e) => {
                tracing::error!(run = %id, error = %e, "cannot read the run's journal; it will be resumed later");
                return;
            }
        };
        let context = Arc::new(LocalContext::new(
            self.clone(),
            id,
            tenant,
            journal,
            cancel.clone(),
        ));
        let result = workflow(Ctx::new(context), input).await;
        let (status, result, error) = match result {
            Err(e) if e.code == context::JOURNAL_FAILED => {
                // The store failed under it: leave the run to be resumed.
                tracing::error!(run = %id, "a workflow stopped: its journal cannot be written");
                return;
            }
            Ok(value) => (RunStatus::Completed, Some(value), None),
            Err(e) if e.is_cancelled() && cancel.is_cancelled() => {
                (RunStatus::Cancelled, None, None)
            }
            Err(e) => (
                RunStatus::Failed,
                None,
                Some(serde_json::to_value(&e).unwrap_or(Value::Null)),
            ),
        };
        let state = self.take_unwritten(id);
        if let Err(e) = self
            .runs
            .finish(id, status, result.as_ref(), error.as_ref(), state.as_ref())
            .await
        {
            tracing::error!(run = %id, error = %e, "cannot record a workflow's end; it will be replayed");
            return;
        }
        let _ = self.finished.send(id.to_owned());
    }

    /// Renews the run's lease while it runs here, and watches for a cancel sent through
    /// another process; `lost` is cancelled if another process holds the run now.
    async fn renew_lease(self: Arc<Self>, id: String, lost: CancellationToken) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let state = self.take_unwritten(&id);
            match self
                .journal
                .renew(
                    &id,
                    &self.owner,
                    unix_now_ms() + LEASE.as_millis() as i64,
                    state.as_ref(),
                )
                .await
            {
                Ok(Some(cancel_requested)) => {
                    if cancel_requested && let Some(held) = self.held().get(&id) {
                        held.cancel.cancel();
                    }
                }
                Ok(None) => {
                    lost.cancel();
                    return;
                }
                Err(e) => tracing::warn!(run = %id, error = %e, "cannot renew a workflow lease"),
            }
        }
    }

    fn set_current(&self, id: &str, current: Option<StepView>) {
        if let Some(held) = self.held().get_mut(id) {
            held.current = current;
        }
    }

    fn set_state(&self, id: &str, state: Value) {
        if let Some(held) = self.held().get_mut(id) {
            held.state = Some(state);
            held.unwritten = true;
        }
    }

    /// The run's published state, if it changed since it was last written.
    fn take_unwritten(&self, id: &str) -> Option<Value> {
        let mut held = self.held();
        let held = held.get_mut(id)?;
        std::mem::take(&mut held.unwritten)
            .then(|| held.state.clone())
            .flatten()
    }

    /// Waits until run `id` has an outcome, the wait is cancelled, or the engine stops.
    async fn await_outcome(
        &self,
        id: &str,
        cancel: Option<&CancellationToken>,
    ) -> Result<Outcome, ActivityError> {
        let mut finished = self.finished.subscribe();
        loop {
            match self.outcome_of(id).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(e) => tracing::warn!(run = %id, error = %e, "cannot read a workflow's outcome"),
            }
            let never = CancellationToken::new();
            let cancel = cancel.unwrap_or(&never);
            tokio::select! {
                () = cancel.cancelled() => return Err(ActivityError::cancelled()),
                _ = finished.recv() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn outcome_of(&self, id: &str) -> Result<Option<Outcome>, EngineError> {
        let Some(run) = self.runs.get(None, id).await? else {
            return Ok(None);
        };
        Ok(match run.summary.status {
            RunStatus::Running => None,
            RunStatus::Completed => Some(Outcome::Completed(run.result.unwrap_or(Value::Null))),
            RunStatus::Cancelled => Some(Outcome::Cancelled),
            RunStatus::Failed => Some(Outcome::Failed(
                run.error
                    .and_then(|e| serde_json::from_value(e).ok())
                    .unwrap_or_else(|| ActivityError::fatal("internal", "the workflow failed")),
            )),
        })
    }

    /// Cancels a run: the flag for any process, and at once if it runs here.
    async fn cancel_run(&self, tenant: &TenantId, id: &str) -> Result<(), EngineError> {
        self.runs.request_cancel(tenant, id).await?;
        if let Some(held) = self.held().get(id) {
            held.cancel.cancel();
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Engine for Arc<LocalEngine> {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn ping(&self) -> Result<(), EngineError> {
        Ok(self.runs.db().ping().await?)
    }

    async fn start(&self, start: StartRequest<'_>) -> Result<bool, EngineError> {
        self.start_run(&start, None).await
    }

    async fn outcome(&self, id: &str) -> Result<Option<Outcome>, EngineError> {
        self.outcome_of(id).await
    }

    async fn signal(
        &self,
        tenant: &TenantId,
        id: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let run = self.runs.get_scoped(tenant, id).await?;
        if run.summary.status != RunStatus::Running {
            return Err(EngineError::Ended(id.to_owned()));
        }
        self.journal.send_signal(id, name, &payload).await?;
        let _ = self.signalled.send(id.to_owned());
        Ok(())
    }

    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<(), EngineError> {
        self.cancel_run(tenant, id).await
    }

    async fn query(&self, tenant: &TenantId, id: &str) -> Result<Option<Value>, EngineError> {
        let run = self.runs.get_scoped(tenant, id).await?;
        let live = self.held().get(id).and_then(|h| h.state.clone());
        Ok(live.or(run.state))
    }

    async fn describe(&self, tenant: &TenantId, id: &str) -> Result<RunView, EngineError> {
        let run = self.runs.get_scoped(tenant, id).await?;
        let steps = self.journal.steps(id).await?;
        let (live_current, live_state) = self
            .held()
            .get(id)
            .map(|h| (h.current.clone(), h.state.clone()))
            .unwrap_or_default();
        let current_step = match run.summary.status {
            RunStatus::Running => match live_current {
                Some(current) => Some(current),
                // Held elsewhere: a timer or signal wait is on record.
                None => self.journal.open_wait(id, steps.len() as u64).await?,
            },
            _ => None,
        };
        Ok(RunView {
            summary: run.summary,
            current_step,
            steps,
            state: live_state.or(run.state),
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
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("workflow runs did not stop within the grace period");
        }
        // Runs stopped here are for the next process at once, not after the lease.
        if let Err(e) = self.journal.release(&self.owner).await {
            tracing::warn!(error = %e, "cannot give up workflow leases; they lapse on their own");
        }
    }
}
