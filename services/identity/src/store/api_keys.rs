//! API key records: the lookup prefix and a hash of the key, never the key itself.

use somagent_common::auth::Capability;
use somagent_common::infra::db::{self, DbError, FromAnyRow};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::IdentityStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<Capability>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, user_id, name, prefix, hash, scopes, expires_at, revoked_at, last_used_at, created_at \
             FROM api_keys ",
            $rest
        )
    };
}

impl FromAnyRow for ApiKeyRecord {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ApiKeyRecord {
            id: r.try_get(0)?,
            tenant_id: r.try_get(1)?,
            user_id: r.try_get(2)?,
            name: r.try_get(3)?,
            prefix: r.try_get(4)?,
            hash: r.try_get(5)?,
            scopes: db::get_words(r, 6, Capability::parse)?,
            expires_at: r.try_get(7)?,
            revoked_at: r.try_get(8)?,
            last_used_at: r.try_get(9)?,
            created_at: r.try_get(10)?,
        })
    }
}

/// How often `last_used_at` is written at most, so busy keys do not write every call.
const TOUCH_EVERY_SECS: i64 = 60;

impl IdentityStore {
    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), sqlx::Error> {
        let scopes: Vec<&str> = key.scopes.iter().map(|c| c.as_str()).collect();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, hash, scopes, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(scopes.join(" "))
        .bind(key.expires_at)
        .bind(key.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, DbError> {
        let row = sqlx::query(select_keys!("WHERE prefix = $1"))
            .bind(prefix)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// A tenant's keys (only `user_id`'s when given), in creation order after `after`.
    pub async fn list_api_keys(
        &self,
        tenant: &TenantId,
        user_id: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ApiKeyRecord>, DbError> {
        let rows = sqlx::query(select_keys!(
            "WHERE tenant_id = $1 AND ($2 = '' OR user_id = $2) AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(tenant)
        .bind(user_id.unwrap_or_default())
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// Revokes a key of the tenant (only of `user_id` when given); false if there is no
    /// such live key.
    pub async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        user_id: Option<&str>,
        now: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND ($4 = '' OR user_id = $4) AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant)
        .bind(id)
        .bind(user_id.unwrap_or_default())
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every live key of a user.
    pub async fn revoke_api_keys_of_user(
        &self,
        tenant: &TenantId,
        user_id: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant)
        .bind(user_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The owner of a key of the tenant, if there is such a key.
    pub async fn api_key_owner(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT user_id FROM api_keys WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)")
            .bind(now)
            .bind(id)
            .bind(now - TOUCH_EVERY_SECS)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
