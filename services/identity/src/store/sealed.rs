//! Identity's secrets at rest: TOTP secrets and signing keys are sealed under the
//! master key (`somagent_common::secrets`), each bound to its row (tenant and user, or
//! key id), so the database, its WAL and its backups hold no usable secret. Rows from
//! before sealing are sealed at start-up; `somagent keys rotate` re-seals under the
//! current master key.

use somagent_common::infra::db::DbError;
use somagent_common::secrets::Sealer;
use sqlx::Row;

use super::IdentityStore;

pub use somagent_common::secrets::ResealScope;

fn totp_context(tenant_id: &str, user_id: &str) -> String {
    format!("identity/totp/{tenant_id}/{user_id}")
}

fn signing_key_context(kid: &str) -> String {
    format!("identity/signing_key/{kid}")
}

impl IdentityStore {
    pub(super) fn seal_totp(&self, tenant_id: &str, user_id: &str, secret: &str) -> String {
        self.sealer
            .seal(secret.as_bytes(), &totp_context(tenant_id, user_id))
    }

    /// The base32 secret of a stored value; a value that does not open is an error,
    /// never a secret taken as it stands.
    pub(super) fn open_totp(
        &self,
        tenant_id: &str,
        user_id: &str,
        stored: &str,
    ) -> Result<String, DbError> {
        self.sealer
            .open_text(stored, &totp_context(tenant_id, user_id))
            .map(|secret| secret.as_str().to_owned())
            .map_err(|e| DbError::Invalid(format!("the TOTP secret of user {user_id}: {e}")))
    }

    pub(super) fn seal_signing_key(&self, kid: &str, pkcs8: &[u8]) -> String {
        self.sealer.seal(pkcs8, &signing_key_context(kid))
    }

    pub(super) fn open_signing_key(&self, kid: &str, stored: &str) -> Result<Vec<u8>, DbError> {
        self.sealer
            .open(stored, &signing_key_context(kid))
            .map(|pkcs8| pkcs8.to_vec())
            .map_err(|e| DbError::Invalid(format!("signing key {kid}: {e}")))
    }

    /// Re-seals the stored secrets `scope` names under the current master key; returns
    /// how many it rewrote. Safe to re-run: a row changed meanwhile by someone else is
    /// left to them (they wrote it under the current key).
    pub async fn reseal(&self, scope: ResealScope) -> Result<u64, DbError> {
        let mut done = 0;
        let users =
            sqlx::query("SELECT id, tenant_id, mfa_secret FROM users WHERE mfa_secret IS NOT NULL")
                .fetch_all(self.db.pool())
                .await?;
        for row in users {
            let (id, tenant_id, stored): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !scope.wants(&self.sealer, &stored) {
                continue;
            }
            let secret = if Sealer::is_sealed(&stored) {
                self.open_totp(&tenant_id, &id, &stored)?
            } else {
                stored.clone()
            };
            done += self
                .replace(
                    "UPDATE users SET mfa_secret = $1 WHERE id = $2 AND mfa_secret = $3",
                    &self.seal_totp(&tenant_id, &id, &secret),
                    &id,
                    &stored,
                )
                .await?;
        }
        let keys = sqlx::query("SELECT kid, pkcs8 FROM signing_keys")
            .fetch_all(self.db.pool())
            .await?;
        for row in keys {
            let (kid, stored): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if !scope.wants(&self.sealer, &stored) {
                continue;
            }
            let pkcs8 = if Sealer::is_sealed(&stored) {
                self.open_signing_key(&kid, &stored)?
            } else {
                // Before sealing, the column held the key's PKCS#8 in base64.
                data_encoding::BASE64
                    .decode(stored.as_bytes())
                    .map_err(|_| DbError::Invalid(format!("signing key {kid} is not base64")))?
            };
            done += self
                .replace(
                    "UPDATE signing_keys SET pkcs8 = $1 WHERE kid = $2 AND pkcs8 = $3",
                    &self.seal_signing_key(&kid, &pkcs8),
                    &kid,
                    &stored,
                )
                .await?;
        }
        if done > 0 {
            somagent_common::secrets::scrub_replaced(&self.db).await?;
        }
        Ok(done)
    }

    async fn replace(
        &self,
        sql: &'static str,
        sealed: &str,
        id: &str,
        was: &str,
    ) -> Result<u64, DbError> {
        Ok(sqlx::query(sql)
            .bind(sealed)
            .bind(id)
            .bind(was)
            .execute(self.db.pool())
            .await?
            .rows_affected())
    }
}
