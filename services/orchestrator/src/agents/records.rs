//! Whose each multi-agent run and project is: one row per run, written when it is
//! asked for (the workflow engine keeps everything else about it).

use somagent_common::infra::db::{self, Db, DbError, FromAnyRow};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub kind: String,
    pub initiator: String,
    pub title: String,
    pub created_at: i64,
}

impl FromAnyRow for RunRecord {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            initiator: r.try_get(2)?,
            title: r.try_get(3)?,
            created_at: r.try_get(4)?,
        })
    }
}

#[derive(Clone)]
pub struct RunRecords {
    db: Db,
}

impl RunRecords {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn record(&self, tenant: &TenantId, run: &RunRecord) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO agent_runs (id, tenant_id, kind, initiator, title, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&run.id)
        .bind(tenant.as_str())
        .bind(&run.kind)
        .bind(&run.initiator)
        .bind(&run.title)
        .bind(run.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<RunRecord>, DbError> {
        let row = sqlx::query(
            "SELECT id, kind, initiator, title, created_at FROM agent_runs WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    /// The tenant's runs of `kind`, `initiator`'s only when given, newest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        kind: &str,
        initiator: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT id, kind, initiator, title, created_at FROM agent_runs \
             WHERE tenant_id = $1 AND kind = $2 AND ($3 = '' OR initiator = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(kind)
        .bind(initiator.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }
}
