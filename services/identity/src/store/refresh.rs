//! Refresh tokens: stored as hashes, used once each. Every token descends from one
//! login (its family); presenting a token that was already used means it was copied,
//! so the whole family is revoked (RFC 6819 §5.2.2.3, refresh token rotation).

use somagent_common::infra::db::{DbError, FromAnyRow};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::IdentityStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub id: String,
    pub family_id: String,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub hash: String,
    pub expires_at: i64,
    pub created_at: i64,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid, and now spent: issue the next one in its family.
    Fresh(RefreshRecord),
    /// Already used or revoked: the family has been revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// Reads the first seven columns; `use_refresh` selects `used_at` and `revoked_at` after
/// them.
impl FromAnyRow for RefreshRecord {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(RefreshRecord {
            id: r.try_get(0)?,
            family_id: r.try_get(1)?,
            tenant_id: r.try_get(2)?,
            user_id: r.try_get(3)?,
            hash: r.try_get(4)?,
            expires_at: r.try_get(5)?,
            created_at: r.try_get(6)?,
        })
    }
}

impl IdentityStore {
    pub async fn insert_refresh(&self, token: &RefreshRecord) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, tenant_id, user_id, hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(&token.family_id)
        .bind(&token.tenant_id)
        .bind(&token.user_id)
        .bind(&token.hash)
        .bind(token.expires_at)
        .bind(token.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Spends the token with this hash, once; a second spend revokes its family.
    pub async fn use_refresh(&self, hash: &str, now: i64) -> Result<RefreshUse, DbError> {
        let row = sqlx::query(
            "SELECT id, family_id, tenant_id, user_id, hash, expires_at, created_at, used_at, revoked_at \
             FROM refresh_tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let record = RefreshRecord::from_row(&row)?;
        let used: Option<i64> = row.try_get(7)?;
        let revoked: Option<i64> = row.try_get(8)?;
        if used.is_some() || revoked.is_some() {
            self.revoke_refresh_family(&record.family_id, now).await?;
            return Ok(RefreshUse::Reused);
        }
        if record.expires_at <= now {
            return Ok(RefreshUse::Invalid);
        }
        // Only one of two concurrent presentations can spend it.
        let spent = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL")
            .bind(now)
            .bind(&record.id)
            .execute(self.db.pool())
            .await?;
        if spent.rows_affected() != 1 {
            self.revoke_refresh_family(&record.family_id, now).await?;
            return Ok(RefreshUse::Reused);
        }
        Ok(RefreshUse::Fresh(record))
    }

    /// Revokes every live refresh token of a user (all their logins).
    pub async fn revoke_refresh_for_user(
        &self,
        tenant: &TenantId,
        user_id: &str,
        now: i64,
    ) -> Result<u64, DbError> {
        Ok(sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(tenant)
        .bind(user_id)
        .execute(self.db.pool())
        .await?
        .rows_affected())
    }

    /// Revokes every token of a family; returns how many were still live.
    pub async fn revoke_refresh_family(&self, family_id: &str, now: i64) -> Result<u64, DbError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The family of the token with this hash, if there is one.
    pub async fn refresh_family_of(&self, hash: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT family_id FROM refresh_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
