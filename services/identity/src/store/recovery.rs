//! MFA recovery codes, stored as hashes and spent once each.

use somagent_common::infra::db::DbError;
use somagent_common::tenant::TenantId;

use super::IdentityStore;

impl IdentityStore {
    /// Replaces the user's recovery codes with `hashes` (a new enrolment voids the old).
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query(
                "INSERT INTO mfa_recovery_codes (hash, user_id, used_at, created_at) VALUES ($1, $2, NULL, $3)",
            )
            .bind(hash)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Spends one unused recovery code of the user; false if it is not one of theirs or
    /// was used already. One statement, so two logins racing with one code cannot both win.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        hash: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE mfa_recovery_codes SET used_at = $1 WHERE hash = $2 AND user_id = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(hash)
        .bind(user_id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Turns MFA off: the secret and every recovery code go.
    pub async fn disable_mfa(&self, tenant: &TenantId, user_id: &str) -> Result<bool, DbError> {
        let mut tx = self.db.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET mfa_enabled = 0, mfa_secret = NULL, mfa_last_step = NULL \
             WHERE id = $1 AND tenant_id = $2 AND mfa_enabled = 1",
        )
        .bind(user_id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    }
}
