//! The local workflow engine: a workflow runs on a tokio task; every activity result is
//! journaled in the relational store before the workflow sees it; a run is held by one
//! process at a time through a lease it renews; after a crash, another start (or
//! another replica, once the lease lapses) replays the run from its journal and carries
//! on from the last completed activity. Starts are idempotent by workflow id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use somagent_common::infra::db::{Db, DbError};
use sqlx::Row;
use tokio::sync::broadcast;

use super::{
    Activities, ActivityError, ActivityOptions, Engine, Outcome, WorkflowContext, WorkflowFn,
};

/// How long a run stays with the process that holds it without a renewal.
const LEASE: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub struct LocalEngine {
    db: Db,
    activities: Arc<dyn Activities>,
    workflows: HashMap<&'static str, WorkflowFn>,
    /// This process, as lease holder.
    owner: String,
    finished: broadcast::Sender<String>,
}

impl LocalEngine {
    pub fn new(
        db: Db,
        activities: Arc<dyn Activities>,
        workflows: HashMap<&'static str, WorkflowFn>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            activities,
            workflows,
            owner: uuid::Uuid::new_v4().to_string(),
            finished: broadcast::channel(1024).0,
        })
    }

    /// Starts workflow `kind` as run `id`; a run that exists already is left as it is
    /// (a retried start is idempotent). True if this call started it.
    pub async fn start(
        self: &Arc<Self>,
        kind: &str,
        id: &str,
        tenant: &str,
        input: &Value,
    ) -> Result<bool, DbError> {
        if !self.workflows.contains_key(kind) {
            return Err(DbError::Invalid(format!(
                "no workflow is registered as `{kind}`"
            )));
        }
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO workflow_runs (id, tenant_id, kind, input, status, lease_owner, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(tenant)
        .bind(kind)
        .bind(input.to_string())
        .bind(&self.owner)
        .bind(now + LEASE.as_millis() as i64)
        .bind(now)
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1;
        if inserted {
            self.clone()
                .spawn(id.to_owned(), kind.to_owned(), input.clone());
        }
        Ok(inserted)
    }

    /// Takes over every running run whose lease has lapsed (its process died) and
    /// carries it on. Called at start and then periodically.
    pub async fn resume_orphans(self: &Arc<Self>) -> Result<usize, DbError> {
        let now = now_ms();
        let rows = sqlx::query("SELECT id, kind, input FROM workflow_runs WHERE status = 'running' AND lease_until < $1")
            .bind(now)
            .fetch_all(self.db.pool())
            .await?;
        let mut resumed = 0;
        for row in rows {
            let (id, kind, input): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let claimed = sqlx::query(
                "UPDATE workflow_runs SET lease_owner = $1, lease_until = $2, updated_at = $3 \
                 WHERE id = $4 AND status = 'running' AND lease_until < $3",
            )
            .bind(&self.owner)
            .bind(now + LEASE.as_millis() as i64)
            .bind(now)
            .bind(&id)
            .execute(self.db.pool())
            .await?
            .rows_affected()
                == 1;
            if claimed {
                tracing::info!(run = %id, %kind, "resuming a workflow run from its journal");
                let input = serde_json::from_str(&input).unwrap_or(Value::Null);
                self.clone().spawn(id, kind, input);
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Resumes orphaned runs every few seconds, for as long as the process lives.
    pub fn keep_resuming(self: &Arc<Self>) {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.resume_orphans().await {
                    tracing::warn!(error = %e, "cannot look for workflow runs to resume");
                }
                tokio::time::sleep(LEASE / 2).await;
            }
        });
    }

    /// The run's outcome, if it has ended.
    pub async fn outcome(&self, id: &str) -> Result<Option<Outcome>, DbError> {
        let row = sqlx::query("SELECT status, result, error FROM workflow_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get(0)?;
        Ok(match status.as_str() {
            "completed" => Some(Outcome::Completed(
                row.try_get::<Option<String>, _>(1)?
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or(Value::Null),
            )),
            "failed" => Some(Outcome::Failed(
                row.try_get::<Option<String>, _>(2)?
                    .and_then(|e| serde_json::from_str(&e).ok())
                    .unwrap_or_else(|| ActivityError::fatal("internal", "the workflow failed")),
            )),
            _ => None,
        })
    }

    /// Waits until run `id` ends, up to `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<Outcome>, DbError> {
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.outcome(id).await? {
                return Ok(Some(outcome));
            }
            // Woken by any run ending here; the poll catches runs ending elsewhere.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                finished.recv(),
            )
            .await;
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn spawn(self: Arc<Self>, id: String, kind: String, input: Value) {
        tokio::spawn(async move {
            let Some(workflow) = self.workflows.get(kind.as_str()).cloned() else {
                tracing::error!(run = %id, %kind, "no such workflow; the run is left for a process that knows it");
                return;
            };
            let journal = match self.journal(&id).await {
                Ok(journal) => journal,
                Err(e) => {
                    tracing::error!(run = %id, error = %e, "cannot read the run's journal; it will be resumed later");
                    return;
                }
            };
            let heartbeat = self.clone().renew_lease(id.clone());
            let ctx = Arc::new(LocalContext {
                engine: self.clone(),
                id: id.clone(),
                seq: AtomicU64::new(0),
                journal,
            });
            let result = workflow(ctx, input).await;
            heartbeat.abort();
            if matches!(&result, Err(e) if e.code == "journal") {
                // The store failed under it: leave the run to be resumed.
                tracing::error!(run = %id, "a workflow stopped: its journal cannot be written");
                return;
            }
            let (status, result, error) = match &result {
                Ok(value) => ("completed", Some(value.to_string()), None),
                Err(e) => (
                    "failed",
                    None,
                    Some(serde_json::to_string(e).unwrap_or_default()),
                ),
            };
            let ended = sqlx::query(
                "UPDATE workflow_runs SET status = $1, result = $2, error = $3, lease_owner = NULL, updated_at = $4 WHERE id = $5 AND status = 'running'",
            )
            .bind(status)
            .bind(result)
            .bind(error)
            .bind(now_ms())
            .bind(&id)
            .execute(self.db.pool())
            .await;
            if let Err(e) = ended {
                tracing::error!(run = %id, error = %e, "cannot record a workflow's end; it will be replayed");
            }
            let _ = self.finished.send(id);
        });
    }

    fn renew_lease(self: Arc<Self>, id: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let renewed = sqlx::query(
                    "UPDATE workflow_runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
                )
                .bind(now_ms() + LEASE.as_millis() as i64)
                .bind(&id)
                .bind(&self.owner)
                .execute(self.db.pool())
                .await;
                if let Err(e) = renewed {
                    tracing::warn!(run = %id, error = %e, "cannot renew a workflow lease");
                }
            }
        })
    }

    async fn journal(&self, id: &str) -> Result<HashMap<u64, (String, bool, String)>, DbError> {
        let rows =
            sqlx::query("SELECT seq, name, ok, output FROM workflow_journal WHERE run_id = $1")
                .bind(id)
                .fetch_all(self.db.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0)? as u64,
                    (r.try_get(1)?, r.try_get::<i64, _>(2)? == 1, r.try_get(3)?),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }

    async fn record(
        &self,
        id: &str,
        seq: u64,
        name: &str,
        result: &Result<Value, ActivityError>,
    ) -> Result<(), DbError> {
        let (ok, output) = match result {
            Ok(v) => (1i64, v.to_string()),
            Err(e) => (0, serde_json::to_string(e).unwrap_or_default()),
        };
        sqlx::query(
            "INSERT INTO workflow_journal (run_id, seq, name, ok, output, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (run_id, seq) DO NOTHING",
        )
        .bind(id)
        .bind(seq as i64)
        .bind(name)
        .bind(ok)
        .bind(output)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Engine for Arc<LocalEngine> {
    async fn start(
        &self,
        kind: &str,
        id: &str,
        tenant: &str,
        input: &Value,
    ) -> anyhow::Result<bool> {
        Ok(LocalEngine::start(self, kind, id, tenant, input).await?)
    }

    async fn outcome(&self, id: &str) -> anyhow::Result<Option<Outcome>> {
        Ok(LocalEngine::outcome(self, id).await?)
    }
}

struct LocalContext {
    engine: Arc<LocalEngine>,
    id: String,
    seq: AtomicU64,
    journal: HashMap<u64, (String, bool, String)>,
}

#[tonic::async_trait]
impl WorkflowContext for LocalContext {
    fn workflow_id(&self) -> &str {
        &self.id
    }

    async fn activity(
        &self,
        name: &str,
        input: Value,
        options: ActivityOptions,
    ) -> Result<Value, ActivityError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        if let Some((recorded, ok, output)) = self.journal.get(&seq) {
            if recorded != name {
                // The workflow took another path than when it was journaled.
                return Err(ActivityError::fatal(
                    "internal",
                    format!(
                        "replay of {} diverged at step {seq}: journal has `{recorded}`, workflow asks `{name}`",
                        self.id
                    ),
                ));
            }
            return if *ok {
                Ok(serde_json::from_str(output).unwrap_or(Value::Null))
            } else {
                Err(serde_json::from_str(output)
                    .unwrap_or_else(|_| ActivityError::fatal("internal", "a journaled failure")))
            };
        }
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if attempt > 1 {
                tokio::time::sleep(options.backoff(attempt)).await;
            }
            let outcome = tokio::time::timeout(
                options.start_to_close,
                self.engine.activities.run(&self.id, name, input.clone()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ActivityError::retryable(
                    "timeout",
                    format!(
                        "{name} took longer than {} s",
                        options.start_to_close.as_secs_f32()
                    ),
                ))
            });
            match outcome {
                Err(e) if e.retryable && attempt < options.max_attempts => {
                    tracing::warn!(run = %self.id, activity = name, attempt, error = %e, "an activity failed; retrying");
                }
                other => break other,
            }
        };
        if let Err(e) = self.engine.record(&self.id, seq, name, &result).await {
            tracing::error!(run = %self.id, activity = name, error = %e, "cannot journal an activity");
            return Err(ActivityError::fatal(
                "journal",
                "the workflow journal cannot be written",
            ));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::Scripted;
    use super::*;

    const FAST: ActivityOptions = ActivityOptions {
        start_to_close: Duration::from_millis(100),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        heartbeat: None,
    };

    fn steps(names: &'static [&'static str]) -> WorkflowFn {
        Arc::new(move |ctx, input| {
            Box::pin(async move {
                let mut out = Vec::new();
                for name in names {
                    out.push(ctx.activity(name, input.clone(), FAST).await?);
                }
                Ok(Value::Array(out))
            })
        })
    }

    async fn engine(
        workflows: Vec<(&'static str, WorkflowFn)>,
    ) -> (Arc<LocalEngine>, Arc<Scripted>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::sqlite(&dir.path().join("wf.db")).await.unwrap();
        db.migrate("orchestrator", crate::store::MIGRATIONS)
            .await
            .unwrap();
        let activities = Arc::new(Scripted::new("flaky", "invalid", "slow"));
        let engine = LocalEngine::new(db, activities.clone(), workflows.into_iter().collect());
        (engine, activities, dir)
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_and_fatal_ones_are_not() {
        let (engine, activities, _dir) = engine(vec![
            ("ok", steps(&["flaky", "done"])),
            ("bad", steps(&["invalid", "never"])),
            ("late", steps(&["slow"])),
        ])
        .await;
        assert!(
            engine
                .start("ok", "run-1", "t", &json!({"x": 1}))
                .await
                .unwrap()
        );
        let outcome = engine
            .wait("run-1", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let Outcome::Completed(result) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(result[0]["attempt"], 3, "two retries");
        assert_eq!(activities.attempts("flaky"), 3);

        engine.start("bad", "run-2", "t", &json!({})).await.unwrap();
        let outcome = engine
            .wait("run-2", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            outcome,
            Outcome::Failed(ActivityError::fatal("validation_failed", "bad input"))
        );
        assert_eq!(
            (activities.attempts("invalid"), activities.attempts("never")),
            (1, 0),
            "never retried, never went on"
        );

        engine
            .start("late", "run-3", "t", &json!({}))
            .await
            .unwrap();
        let Outcome::Failed(e) = engine
            .wait("run-3", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (e.code.as_str(), activities.attempts("slow")),
            ("timeout", 3)
        );
    }

    #[tokio::test]
    async fn a_start_is_idempotent_and_a_crashed_run_resumes_from_its_journal() {
        let (engine, activities, _dir) = engine(vec![("two", steps(&["first", "second"]))]).await;
        assert!(engine.start("two", "run-a", "t", &json!({})).await.unwrap());
        assert!(
            !engine.start("two", "run-a", "t", &json!({})).await.unwrap(),
            "the same id is the same run"
        );
        engine
            .wait("run-a", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(activities.attempts("first"), 1);

        // A run whose process died after its first step: journaled, lease lapsed.
        let db = engine.db.clone();
        sqlx::query("INSERT INTO workflow_runs (id, tenant_id, kind, input, status, lease_owner, lease_until, created_at, updated_at) VALUES ('run-b', 't', 'two', '{}', 'running', 'dead', 0, 0, 0)")
            .execute(db.pool())
            .await
            .unwrap();
        engine
            .record("run-b", 0, "first", &Ok(json!("from before the crash")))
            .await
            .unwrap();
        assert_eq!(engine.resume_orphans().await.unwrap(), 1);
        let Outcome::Completed(result) = engine
            .wait("run-b", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            result[0], "from before the crash",
            "the journaled step is not run again"
        );
        assert_eq!(activities.attempts("first"), 1);
        assert_eq!(activities.attempts("second"), 2);
        assert_eq!(
            engine.resume_orphans().await.unwrap(),
            0,
            "a finished run is not resumed"
        );
    }
}
