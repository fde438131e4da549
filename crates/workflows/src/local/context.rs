//! A run's context on the local engine: each step answered from the journal on replay,
//! or carried out and journaled.

use somagent_common::tenant::TenantId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use somagent_common::clock::unix_now_ms;
use tokio_util::sync::CancellationToken;

use super::journal::{Entry, Record};
use super::{LocalEngine, POLL};
use crate::context::{Scope, Step, WorkflowContext};
use crate::engine::{Outcome, StartRequest, StepView};
use crate::error::ActivityError;
use crate::options::ActivityOptions;
use crate::registry::ActivityInfo;

/// The code of the error that stops a run whose journal cannot be written: the run is
/// left to be resumed, never marked failed.
pub const JOURNAL_FAILED: &str = "journal";

pub struct LocalContext {
    engine: Arc<LocalEngine>,
    id: String,
    tenant: TenantId,
    next: AtomicU64,
    journal: HashMap<u64, Entry>,
    cancel: CancellationToken,
}

fn journal_failed(run: &str, e: &dyn std::fmt::Display) -> ActivityError {
    tracing::error!(run, error = %e, "cannot journal a workflow step");
    ActivityError::fatal(JOURNAL_FAILED, "the workflow journal cannot be written")
}

impl LocalContext {
    pub fn new(
        engine: Arc<LocalEngine>,
        id: &str,
        tenant: &TenantId,
        journal: HashMap<u64, Entry>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            next: AtomicU64::new(0),
            journal,
            cancel,
        }
    }

    /// Resolves when the run is cancelled, if the step may be; never otherwise.
    async fn cancelled(&self, scope: Scope) {
        match scope {
            Scope::Cancellable => self.cancel.cancelled().await,
            Scope::Cleanup => std::future::pending().await,
        }
    }

    async fn activity(
        &self,
        name: &str,
        input: Value,
        options: ActivityOptions,
        scope: Scope,
    ) -> (Result<Value, ActivityError>, u32) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                tokio::select! {
                    () = self.cancelled(scope) => return (Err(ActivityError::cancelled()), attempt - 1),
                    () = tokio::time::sleep(options.backoff(attempt)) => {}
                }
            }
            let info = ActivityInfo {
                workflow_id: self.id.clone(),
                name: name.to_owned(),
                attempt,
            };
            let run = tokio::time::timeout(
                options.start_to_close,
                self.engine.registry.run_activity(info, input.clone()),
            );
            // Dropping the attempt's future stops it: that is how a cancel reaches it.
            let outcome = tokio::select! {
                () = self.cancelled(scope) => return (Err(ActivityError::cancelled()), attempt),
                outcome = run => outcome.unwrap_or_else(|_| {
                    Err(ActivityError::retryable(
                        "timeout",
                        format!("{name} took longer than {} s", options.start_to_close.as_secs_f32()),
                    ))
                }),
            };
            match outcome {
                Err(e) if e.retryable && attempt < options.max_attempts => {
                    tracing::warn!(run = %self.id, activity = name, attempt, error = %e, "an activity failed; retrying");
                }
                other => return (other, attempt),
            }
        }
    }

    async fn sleep(
        &self,
        seq: u64,
        duration: Duration,
        scope: Scope,
    ) -> Result<Value, ActivityError> {
        let until = self
            .engine
            .journal
            .wait_until(&self.id, seq, unix_now_ms() + duration.as_millis() as i64)
            .await
            .map_err(|e| journal_failed(&self.id, &e))?;
        let left = Duration::from_millis((until - unix_now_ms()).max(0) as u64);
        tokio::select! {
            () = self.cancelled(scope) => Err(ActivityError::cancelled()),
            () = tokio::time::sleep(left) => Ok(Value::Null),
        }
    }

    /// Waits for a signal; a received one is journaled by the take itself.
    async fn signal(
        &self,
        seq: u64,
        name: &str,
        timeout: Duration,
        started_at: i64,
        scope: Scope,
    ) -> Result<Option<Value>, ActivityError> {
        let until = self
            .engine
            .journal
            .wait_until(&self.id, seq, started_at + timeout.as_millis() as i64)
            .await
            .map_err(|e| journal_failed(&self.id, &e))?;
        let mut sent = self.engine.signalled.subscribe();
        loop {
            let taken = self
                .engine
                .journal
                .take_signal(&self.id, seq, name, started_at)
                .await
                .map_err(|e| journal_failed(&self.id, &e))?;
            if taken.is_some() {
                return Ok(taken);
            }
            let left = until - unix_now_ms();
            if left <= 0 {
                return Ok(None);
            }
            let nap = Duration::from_millis(left as u64).min(POLL);
            tokio::select! {
                () = self.cancelled(scope) => return Err(ActivityError::cancelled()),
                _ = sent.recv() => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn child(
        &self,
        kind: &str,
        id: &str,
        input: &Value,
        scope: Scope,
    ) -> Result<Value, ActivityError> {
        let start = StartRequest {
            kind,
            id,
            tenant: &self.tenant,
            input,
        };
        let started = self
            .engine
            .start_run(&start, Some(&self.id))
            .await
            .map_err(|e| {
                ActivityError::retryable("unavailable", format!("cannot start child {id}: {e}"))
            })?;
        if !started {
            // The id was taken before: by this child (a replay), or by another run.
            let existing = self
                .engine
                .runs
                .get(None, id)
                .await
                .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
            match existing {
                Some(run) if run.summary.tenant == self.tenant && run.summary.kind == kind => {}
                _ => {
                    return Err(ActivityError::fatal(
                        "conflict",
                        format!("the run id `{id}` is taken by another workflow"),
                    ));
                }
            }
        }
        let cancel = match scope {
            Scope::Cancellable => Some(&self.cancel),
            Scope::Cleanup => None,
        };
        match self.engine.await_outcome(id, cancel).await {
            Ok(Outcome::Completed(value)) => Ok(value),
            Ok(Outcome::Failed(e)) => Err(e),
            Ok(Outcome::Cancelled) => Err(ActivityError::cancelled()),
            Err(e) => {
                // The parent was cancelled: so is the child.
                if let Err(cancel) = self.engine.cancel_run(&self.tenant, id).await {
                    tracing::debug!(child = id, error = %cancel, "the cancelled parent's child had ended");
                }
                Err(e)
            }
        }
    }
}

#[tonic::async_trait]
impl WorkflowContext for LocalContext {
    fn workflow_id(&self) -> &str {
        &self.id
    }

    async fn step(&self, step: Step, scope: Scope) -> Result<Value, ActivityError> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let (kind, name) = step.label();
        if let Some(entry) = self.journal.get(&seq) {
            if entry.kind != kind || entry.name != name {
                // The workflow took another path than when it was journaled.
                return Err(ActivityError::fatal(
                    "internal",
                    format!(
                        "replay of {} diverged at step {seq}: the journal has {} `{}`, the workflow asks {kind} `{name}`",
                        self.id, entry.kind, entry.name
                    ),
                ));
            }
            return entry.answer.clone();
        }
        if scope == Scope::Cancellable && self.cancel.is_cancelled() {
            return Err(ActivityError::cancelled());
        }
        let started_at = unix_now_ms();
        self.engine.set_current(
            &self.id,
            Some(StepView {
                seq,
                kind: kind.into(),
                name: name.clone(),
                status: "running".into(),
                attempts: 1,
                started_at: Some(started_at),
                ended_at: None,
                error: None,
            }),
        );
        let (answer, attempts) = match step {
            Step::Activity {
                name,
                input,
                options,
            } => self.activity(&name, input, options, scope).await,
            Step::Sleep(duration) => (self.sleep(seq, duration, scope).await, 1),
            Step::Signal { name, timeout } => {
                match self.signal(seq, &name, timeout, started_at, scope).await {
                    // Journaled with the take.
                    Ok(Some(payload)) => {
                        self.engine.set_current(&self.id, None);
                        return Ok(json!({ "received": payload }));
                    }
                    Ok(None) => (Ok(Value::Null), 1),
                    Err(e) => (Err(e), 1),
                }
            }
            Step::Child { kind, id, input } => (self.child(&kind, &id, &input, scope).await, 1),
            Step::Now => (Ok(json!(started_at)), 1),
        };
        self.engine.set_current(&self.id, None);
        if matches!(&answer, Err(e) if e.code == JOURNAL_FAILED) {
            return answer;
        }
        let record = Record {
            seq,
            kind,
            name: &name,
            answer: &answer,
            attempts,
            started_at,
            ended_at: unix_now_ms(),
        };
        if let Err(e) = self.engine.journal.record(&self.id, &record).await {
            return Err(journal_failed(&self.id, &e));
        }
        answer
    }

    fn publish(&self, state: Value) {
        // Kept in memory: written with the next lease renewal and at the run's end, so
        // publishing costs no write per step. Queries here read it at once.
        self.engine.set_state(&self.id, state);
    }
}
