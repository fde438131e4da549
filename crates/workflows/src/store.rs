//! The runs index both engines keep in the service's relational store (portable SQL;
//! every operator query names its tenant).

use serde_json::Value;
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::{Db, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::engine::{EngineError, RunFilter, RunStatus, RunSummary};

/// Applied by a service that runs workflows, under the scope `workflows`. Never edit
/// one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "workflows",
        include_str!("../migrations/0001_workflows.sql"),
    ),
    Migration {
        version: 2,
        name: "signals",
        sqlite: include_str!("../migrations/0002_signals.sqlite.sql"),
        postgres: include_str!("../migrations/0002_signals.postgres.sql"),
    },
];

const SUMMARY: &str = "id, kind, tenant_id, status, parent_id, created_at, updated_at, ended_at";

/// A run's row.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub summary: RunSummary,
    pub input: Value,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub state: Option<Value>,
    pub cancel_requested: bool,
}

fn json_column(row: &AnyRow, column: &str) -> Result<Option<Value>, sqlx::Error> {
    Ok(row
        .try_get::<Option<String>, _>(column)?
        .map(|raw| serde_json::from_str(&raw).unwrap_or(Value::String(raw))))
}

fn summary(row: &AnyRow) -> Result<RunSummary, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(RunSummary {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        tenant: row.try_get("tenant_id")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown run status `{status}`").into()))?,
        parent_id: row.try_get("parent_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

#[derive(Clone)]
pub struct RunStore {
    db: Db,
}

/// A run to record.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub tenant: &'a TenantId,
    pub kind: &'a str,
    pub engine: &'a str,
    pub parent_id: Option<&'a str>,
    pub input: &'a Value,
    /// The process that runs it (local engine), and until when.
    pub lease: Option<(&'a str, i64)>,
}

impl RunStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Records a new run; false if a run with that id exists.
    pub async fn insert(&self, run: &NewRun<'_>) -> Result<bool, EngineError> {
        let now = unix_now_ms();
        let (owner, until) = match run.lease {
            Some((owner, until)) => (Some(owner), until),
            None => (None, 0),
        };
        Ok(sqlx::query(
            "INSERT INTO wf_runs (id, tenant_id, kind, engine, parent_id, input, status, lease_owner, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.id)
        .bind(run.tenant)
        .bind(run.kind)
        .bind(run.engine)
        .bind(run.parent_id)
        .bind(run.input.to_string())
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// The run, if it exists (and is the tenant's, when one is named).
    pub async fn get(
        &self,
        tenant: Option<&TenantId>,
        id: &str,
    ) -> Result<Option<RunRow>, EngineError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY}, input, result, error, state, cancel_requested FROM wf_runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let run = RunRow {
            summary: summary(&row)?,
            input: json_column(&row, "input")?.unwrap_or(Value::Null),
            result: json_column(&row, "result")?,
            error: json_column(&row, "error")?,
            state: json_column(&row, "state")?,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        };
        Ok(match tenant {
            Some(tenant) if run.summary.tenant != *tenant => None,
            _ => Some(run),
        })
    }

    /// The tenant's run, or `NotFound` (another tenant's run is not found either).
    pub async fn get_scoped(&self, tenant: &TenantId, id: &str) -> Result<RunRow, EngineError> {
        self.get(Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    pub async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, EngineError> {
        let mut sql = format!("SELECT {SUMMARY} FROM wf_runs WHERE tenant_id = $1");
        let mut n = 1;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if filter.kind.is_some() {
            sql.push_str(&format!(" AND kind = {}", param()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = {}", param()));
        }
        if filter.before.is_some() {
            let (a, b, c) = (param(), param(), param());
            sql.push_str(&format!(
                " AND (created_at < {a} OR (created_at = {b} AND id < {c}))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            filter.limit.clamp(1, 500)
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&filter.tenant);
        if let Some(kind) = &filter.kind {
            query = query.bind(kind);
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some((at, id)) = &filter.before {
            query = query.bind(*at).bind(*at).bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(summary).collect::<Result<_, _>>()?)
    }

    /// Records how a running run ended; false if it had ended already.
    pub async fn finish(
        &self,
        id: &str,
        status: RunStatus,
        result: Option<&Value>,
        error: Option<&Value>,
        state: Option<&Value>,
    ) -> Result<bool, EngineError> {
        let now = unix_now_ms();
        Ok(sqlx::query(
            "UPDATE wf_runs SET status = $1, result = $2, error = $3, lease_owner = NULL, updated_at = $4, ended_at = $4, \
             state = COALESCE($6, state) WHERE id = $5 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(result.map(Value::to_string))
        .bind(error.map(Value::to_string))
        .bind(now)
        .bind(id)
        .bind(state.map(Value::to_string))
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1)
    }

    pub async fn set_state(&self, id: &str, state: &Value) -> Result<(), EngineError> {
        sqlx::query("UPDATE wf_runs SET state = $1, updated_at = $2 WHERE id = $3")
            .bind(state.to_string())
            .bind(unix_now_ms())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Marks the tenant's running run as cancelled-on-request.
    pub async fn request_cancel(&self, tenant: &TenantId, id: &str) -> Result<(), EngineError> {
        let run = self.get_scoped(tenant, id).await?;
        if run.summary.status != RunStatus::Running {
            return Err(EngineError::Ended(id.to_owned()));
        }
        sqlx::query("UPDATE wf_runs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'")
            .bind(unix_now_ms())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
