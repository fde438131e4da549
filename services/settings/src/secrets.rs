//! Tenants' secrets: written, listed by name and version, removed; never read back
//! through the API. The value is sealed under the master key before it is stored,
//! bound to its tenant and name; only a service with a service token meant for
//! settings, acting for a user who may read settings, reads it (see `api/grpc`).
//! Audit records and events carry the name and version, never the value.

use std::sync::Arc;

use serde_json::json;
use somagent_common::audit::AuditRecord;
use somagent_common::auth::Principal;
use somagent_common::clock::unix_now_ms;
use somagent_common::error::ApiError;
use somagent_common::infra::db::{Db, DbError};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::secrets::{ResealScope, Sealer};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use zeroize::Zeroizing;

/// The largest secret value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A secret as it may be shown: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub version: i64,
    pub changed_by: String,
    pub changed_at_ms: i64,
}

#[derive(Clone)]
pub struct SecretStore {
    db: Db,
    sealer: Arc<Sealer>,
    outbox: Outbox,
}

fn binding(tenant: &str, name: &str) -> String {
    format!("settings/secret/{tenant}/{name}")
}

pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name",
            "is 1 to 64 of A-Z, a-z, 0-9, `_`, `.`, `-`",
        ))
    }
}

impl SecretStore {
    pub fn new(db: Db, sealer: Arc<Sealer>, outbox: Outbox) -> Self {
        Self { db, sealer, outbox }
    }

    /// Sets the secret `name` to `value` (a new version), audited without the value.
    pub async fn put(
        &self,
        principal: &Principal,
        name: &str,
        value: &[u8],
    ) -> Result<SecretInfo, ApiError> {
        check_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::validation("value", "is 1 byte to 64 KiB"));
        }
        let tenant = &principal.tenant;
        let sealed = self.sealer.seal(value, &binding(tenant.as_str(), name));
        let now = unix_now_ms();
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let row = sqlx::query(
            "INSERT INTO settings_secrets (tenant_id, name, version, sealed, changed_by, changed_at_ms) \
             VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (tenant_id, name) DO UPDATE SET \
             version = settings_secrets.version + 1, sealed = excluded.sealed, \
             changed_by = excluded.changed_by, changed_at_ms = excluded.changed_at_ms \
             RETURNING version",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(&sealed)
        .bind(&principal.subject)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let version: i64 = row
            .try_get(0)
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        self.commit(tx, principal, name, version, "set").await?;
        Ok(SecretInfo {
            name: name.to_owned(),
            version,
            changed_by: principal.subject.clone(),
            changed_at_ms: now,
        })
    }

    /// Removes the secret for good; false if there was none.
    pub async fn delete(&self, principal: &Principal, name: &str) -> Result<bool, ApiError> {
        check_name(name)?;
        let tenant = &principal.tenant;
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let row = sqlx::query(
            "DELETE FROM settings_secrets WHERE tenant_id = $1 AND name = $2 RETURNING version",
        )
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let version: i64 = row
            .try_get(0)
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        self.commit(tx, principal, name, version, "delete").await?;
        Ok(true)
    }

    /// Commits `tx` with the change's audit record and its `settings.updated` event:
    /// the name and version, never the value.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        principal: &Principal,
        name: &str,
        version: i64,
        action: &str,
    ) -> Result<(), ApiError> {
        let tenant = principal.tenant.as_str();
        let audit = AuditRecord::by("settings", "settings.secret_changed", principal)
            .on("secret", Some(name))
            .action(action)
            .with("version", version)
            .envelope();
        let updated = Envelope::new(
            "settings.updated",
            "settings",
            principal.tenant.clone(),
            json!({"what": "secrets", "name": name, "version": version}),
        );
        self.outbox
            .commit_and_publish(
                tx,
                &[
                    (topics::AUDIT, tenant, &audit),
                    (topics::SETTINGS_UPDATED, tenant, &updated),
                ],
            )
            .await
            .map_err(ApiError::internal)
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<SecretInfo>, DbError> {
        let rows = sqlx::query(
            "SELECT name, version, changed_by, changed_at_ms FROM settings_secrets \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretInfo {
                    name: r.try_get(0)?,
                    version: r.try_get(1)?,
                    changed_by: r.try_get(2)?,
                    changed_at_ms: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// The value and version of the tenant's secret `name`, for a service.
    pub async fn read(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<(Zeroizing<Vec<u8>>, i64)>, ApiError> {
        let row = sqlx::query(
            "SELECT sealed, version FROM settings_secrets WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await
        .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: String = row
            .try_get(0)
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let version: i64 = row
            .try_get(1)
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let value = self
            .sealer
            .open(&sealed, &binding(tenant.as_str(), name))
            .map_err(|e| ApiError::internal(anyhow::anyhow!("a secret does not open: {e}")))?;
        Ok(Some((value, version)))
    }
}

/// Re-seals what `scope` asks under the current master key (`somagent keys rotate`);
/// how many secrets.
pub async fn reseal(db: &Db, sealer: &Sealer, scope: ResealScope) -> anyhow::Result<u64> {
    let rows = sqlx::query("SELECT tenant_id, name, sealed FROM settings_secrets")
        .fetch_all(db.pool())
        .await?;
    let mut done = 0;
    for row in rows {
        let (tenant, name, stored): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if !scope.wants(sealer, &stored) {
            continue;
        }
        let bound = binding(&tenant, &name);
        let plain = sealer.open(&stored, &bound)?;
        done += sqlx::query(
            "UPDATE settings_secrets SET sealed = $1 WHERE tenant_id = $2 AND name = $3 AND sealed = $4",
        )
        .bind(sealer.seal(&plain, &bound))
        .bind(&tenant)
        .bind(&name)
        .bind(&stored)
        .execute(db.pool())
        .await?
        .rows_affected();
    }
    if done > 0 {
        somagent_common::secrets::scrub_replaced(db).await?;
    }
    Ok(done)
}
