//! The tenants' own policy rules, in portable SQL; every query names its tenant.

use somagent_common::constitution::Severity;
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::rules::{Rule, RuleKind};

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "rules",
    include_str!("../migrations/0001_rules.sql"),
)];

const SELECT: &str = "SELECT id, name, description, kind, value, severity, score, enabled, updated_at FROM policy_rules";

#[derive(Clone)]
pub struct RuleStore {
    db: Db,
}

impl RuleStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<Rule>, DbError> {
        let sql = format!("{SELECT} WHERE tenant_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Rule>, DbError> {
        let sql = format!("{SELECT} WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Inserts or, with `replace`, updates; false if `replace` found nothing.
    pub async fn save(
        &self,
        tenant: &TenantId,
        rule: &Rule,
        replace: bool,
    ) -> Result<bool, DbError> {
        let sql = if replace {
            "UPDATE policy_rules SET name = $3, description = $4, kind = $5, value = $6, severity = $7, \
             score = $8, enabled = $9, updated_at = $10 WHERE tenant_id = $1 AND id = $2"
        } else {
            "INSERT INTO policy_rules (tenant_id, id, name, description, kind, value, severity, score, enabled, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        };
        let done = sqlx::query(sql)
            .bind(tenant)
            .bind(&rule.id)
            .bind(&rule.name)
            .bind(&rule.description)
            .bind(rule.kind.as_str())
            .bind(&rule.value)
            .bind(rule.severity.as_str())
            .bind(i64::from(rule.score))
            .bind(i64::from(rule.enabled))
            .bind(rule.updated_at)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(done == 1)
    }

    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<bool, DbError> {
        Ok(
            sqlx::query("DELETE FROM policy_rules WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .execute(self.db.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }
}

impl FromAnyRow for Rule {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Rule {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            description: r.try_get(2)?,
            kind: db::get_parsed(r, 3, RuleKind::parse, "stored rule has an unknown kind")?,
            value: r.try_get(4)?,
            severity: db::get_parsed(r, 5, Severity::parse, "stored rule has an unknown severity")?,
            score: db::get_u32(r, 6)?,
            enabled: db::get_bool(r, 7)?,
            updated_at: r.try_get(8)?,
        })
    }
}
