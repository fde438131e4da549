//! Users of external OIDC issuers: the platform user each (issuer, subject) pair was
//! provisioned as. One pair, one user, and never the other way round.

use somagent_common::infra::db::{self, DbError, FromAnyRow};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{IdentityStore, User, insert_user};

/// Who an external issuer's subject is on the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalLink {
    pub tenant_id: TenantId,
    pub user_id: String,
    /// The `iat` of the newest token whose roles the user holds: an older token,
    /// still valid at its issuer, must not bring back a role removed since.
    pub claims_issued_at: i64,
}

impl FromAnyRow for ExternalLink {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ExternalLink {
            tenant_id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            claims_issued_at: r.try_get(2)?,
        })
    }
}

impl IdentityStore {
    pub async fn external_link(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<ExternalLink>, DbError> {
        let row = sqlx::query(
            "SELECT tenant_id, user_id, claims_issued_at FROM external_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    /// Creates `user` and links it to `issuer` + `subject`, both or neither: a
    /// concurrent first login of the same person fails on the link's uniqueness.
    pub async fn provision_external(
        &self,
        issuer: &str,
        subject: &str,
        claims_issued_at: i64,
        user: &User,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        insert_user(&mut tx, user).await?;
        sqlx::query(
            "INSERT INTO external_identities (issuer, subject, tenant_id, user_id, claims_issued_at, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(&user.tenant_id)
        .bind(&user.id)
        .bind(claims_issued_at)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Records that the person came through their issuer again, with a token issued at
    /// `claims_issued_at` (kept if newer than the one recorded).
    pub async fn touch_external(
        &self,
        issuer: &str,
        subject: &str,
        now: i64,
        claims_issued_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE external_identities SET last_seen_at = $1, claims_issued_at = \
             CASE WHEN claims_issued_at < $2 THEN $2 ELSE claims_issued_at END \
             WHERE issuer = $3 AND subject = $4",
        )
        .bind(now)
        .bind(claims_issued_at)
        .bind(issuer)
        .bind(subject)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Drops a link whose user is gone (deleted where foreign keys do not cascade), so
    /// the person is provisioned anew.
    pub async fn unlink_external(&self, issuer: &str, subject: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM external_identities WHERE issuer = $1 AND subject = $2")
            .bind(issuer)
            .bind(subject)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Whether the user was provisioned for an external issuer: such a user proves who
    /// they are there, never with a password here.
    pub async fn is_external_user(&self, user_id: &str) -> Result<bool, DbError> {
        Ok(
            sqlx::query("SELECT 1 FROM external_identities WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(self.db.pool())
                .await?
                .is_some(),
        )
    }
}
