//! Tools, their sealed credentials and the invocation log, in portable SQL; every
//! query names its tenant.

use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use somagent_common::secrets::{ResealScope, Sealer};

use crate::domain::manifest::ToolManifest;
use crate::tools::credential_binding;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(1, "tools", include_str!("../migrations/0001_tools.sql")),
    Migration::portable(
        2,
        "approved_by",
        include_str!("../migrations/0002_approved_by.sql"),
    ),
    Migration::portable(
        3,
        "tool sites",
        include_str!("../migrations/0003_tool_sites.sql"),
    ),
];

/// A tenant's tool as stored.
#[derive(Debug, Clone)]
pub struct StoredTool {
    pub kind: String,
    pub manifest: ToolManifest,
    pub created_at: i64,
    /// The tenant said where its instance is served (`manifest.base_url` is that).
    pub site_set: bool,
}

/// One line of the invocation log.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationRecord {
    pub id: String,
    pub tool_id: String,
    pub action: String,
    pub subject: String,
    pub session_id: String,
    pub outcome: String,
    pub status: u32,
    pub duration_ms: i64,
    pub cost_micros: i64,
    pub created_at: i64,
    /// Who approved the call, for an action that requires approval.
    pub approved_by: String,
}

#[derive(Clone)]
pub struct ToolStore {
    db: Db,
}

impl ToolStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<StoredTool>, DbError> {
        let rows = sqlx::query(
            "SELECT kind, manifest, created_at FROM tool_tools WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant)
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<StoredTool>, DbError> {
        let row = sqlx::query(
            "SELECT kind, manifest, created_at FROM tool_tools WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    /// Adds a tool; false if the tenant already has one with its id.
    pub async fn create(
        &self,
        tenant: &TenantId,
        tool: &StoredTool,
        created_by: &str,
    ) -> Result<bool, DbError> {
        let manifest =
            serde_json::to_string(&tool.manifest).map_err(|e| DbError::Invalid(e.to_string()))?;
        let done = sqlx::query(
            "INSERT INTO tool_tools (tenant_id, id, kind, manifest, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant)
        .bind(&tool.manifest.id)
        .bind(&tool.kind)
        .bind(manifest)
        .bind(created_by)
        .bind(tool.created_at)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Where the tenant's instance of a tool is served, if it said.
    pub async fn site(&self, tenant: &TenantId, tool: &str) -> Result<Option<String>, DbError> {
        let row =
            sqlx::query("SELECT base_url FROM tool_sites WHERE tenant_id = $1 AND tool_id = $2")
                .bind(tenant)
                .bind(tool)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Where the tenant's instances of its tools are served, by tool.
    pub async fn sites(&self, tenant: &TenantId) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query("SELECT tool_id, base_url FROM tool_sites WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }

    pub async fn put_site(
        &self,
        tenant: &TenantId,
        tool: &str,
        base_url: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO tool_sites (tenant_id, tool_id, base_url, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, tool_id) DO UPDATE SET base_url = excluded.base_url, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(tool)
        .bind(base_url)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Removes a tool, its credential and its site together; false if there was no such
    /// tool.
    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<bool, DbError> {
        let mut tx = self.db.pool().begin().await?;
        for table in ["tool_credentials", "tool_sites"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND tool_id = $2"
            )))
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM tool_tools WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    /// The sealed credential of a tool, if set.
    pub async fn credential(
        &self,
        tenant: &TenantId,
        tool: &str,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT sealed FROM tool_credentials WHERE tenant_id = $1 AND tool_id = $2",
        )
        .bind(tenant)
        .bind(tool)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn has_credentials(&self, tenant: &TenantId) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT tool_id FROM tool_credentials WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    pub async fn put_credential(
        &self,
        tenant: &TenantId,
        tool: &str,
        sealed: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO tool_credentials (tenant_id, tool_id, sealed, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, tool_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(tool)
        .bind(sealed)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_credential(&self, tenant: &TenantId, tool: &str) -> Result<bool, DbError> {
        Ok(
            sqlx::query("DELETE FROM tool_credentials WHERE tenant_id = $1 AND tool_id = $2")
                .bind(tenant)
                .bind(tool)
                .execute(self.db.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Re-seals the credentials `scope` wants under the sealer's current key (for
    /// `somagent keys rotate`); returns how many it rewrote. Credentials are sealed
    /// from the first, so only sealed values are read.
    pub async fn reseal(&self, sealer: &Sealer, scope: ResealScope) -> anyhow::Result<u64> {
        let rows = sqlx::query("SELECT tenant_id, tool_id, sealed FROM tool_credentials")
            .fetch_all(self.db.pool())
            .await?;
        let mut done = 0;
        for row in rows {
            let (tenant, tool, stored): (TenantId, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !scope.wants(sealer, &stored) {
                continue;
            }
            let binding = credential_binding(&tenant, &tool);
            let plain = sealer.open(&stored, &binding)?;
            done += sqlx::query(
                "UPDATE tool_credentials SET sealed = $1 WHERE tenant_id = $2 AND tool_id = $3 AND sealed = $4",
            )
            .bind(sealer.seal(&plain, &binding))
            .bind(&tenant)
            .bind(&tool)
            .bind(&stored)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        }
        if done > 0 {
            somagent_common::secrets::scrub_replaced(&self.db).await?;
        }
        Ok(done)
    }

    /// A transaction of the tool service's database, for writes that commit with the
    /// outbox's events.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        self.db.begin().await
    }

    /// Logs an invocation in `tx` (committed with its audit and usage events).
    pub async fn record(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: &TenantId,
        r: &InvocationRecord,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO tool_invocations (tenant_id, id, tool_id, action, subject, session_id, outcome, \
             status, duration_ms, cost_micros, created_at, approved_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(tenant)
        .bind(&r.id)
        .bind(&r.tool_id)
        .bind(&r.action)
        .bind(&r.subject)
        .bind(&r.session_id)
        .bind(&r.outcome)
        .bind(i64::from(r.status))
        .bind(r.duration_ms)
        .bind(r.cost_micros)
        .bind(r.created_at)
        .bind(&r.approved_by)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Newest first, before the invocation id `before` (ids are time-ordered UUIDs);
    /// only `subject`'s when given, only `tool`'s when given.
    pub async fn invocations(
        &self,
        tenant: &TenantId,
        subject: Option<&str>,
        tool: &str,
        before: &str,
        limit: i64,
    ) -> Result<Vec<InvocationRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT id, tool_id, action, subject, session_id, outcome, status, duration_ms, cost_micros, created_at, approved_by \
             FROM tool_invocations WHERE tenant_id = $1 AND ($2 = '' OR subject = $2) AND ($3 = '' OR tool_id = $3) \
             AND ($4 = '' OR id < $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(tenant)
        .bind(subject.unwrap_or(""))
        .bind(tool)
        .bind(before)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }
}

impl FromAnyRow for StoredTool {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let manifest: String = r.try_get(1)?;
        Ok(StoredTool {
            kind: r.try_get(0)?,
            manifest: serde_json::from_str(&manifest)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            created_at: r.try_get(2)?,
            site_set: false,
        })
    }
}

impl FromAnyRow for InvocationRecord {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(InvocationRecord {
            id: r.try_get(0)?,
            tool_id: r.try_get(1)?,
            action: r.try_get(2)?,
            subject: r.try_get(3)?,
            session_id: r.try_get(4)?,
            outcome: r.try_get(5)?,
            status: db::get_u32(r, 6)?,
            duration_ms: r.try_get(7)?,
            cost_micros: r.try_get(8)?,
            created_at: r.try_get(9)?,
            approved_by: r.try_get(10)?,
        })
    }
}
