//! A service's own Ed25519 signing key, kept in one of its tables (`kid`, `pkcs8`,
//! `created_at`) sealed under the master key and bound to its id: made on first start
//! (the oldest wins when replicas race), re-sealed by `somagent keys rotate`.

use std::sync::Arc;

use sqlx::Row;

use super::{ResealScope, Sealer};
use crate::auth::SigningKey;
use crate::clock::unix_now;
use crate::infra::db::Db;

/// Where a service keeps its key: the table, and the purpose each sealed row is bound
/// to (`<purpose>/<kid>`).
#[derive(Clone)]
pub struct StoredSigningKey {
    db: Db,
    sealer: Arc<Sealer>,
    table: &'static str,
    purpose: &'static str,
}

impl StoredSigningKey {
    pub fn new(db: Db, sealer: Arc<Sealer>, table: &'static str, purpose: &'static str) -> Self {
        Self {
            db,
            sealer,
            table,
            purpose,
        }
    }

    fn context(&self, kid: &str) -> String {
        format!("{}/{kid}", self.purpose)
    }

    /// The key, made on first use (race-safe across replicas).
    pub async fn get(&self) -> anyhow::Result<SigningKey> {
        let select = format!(
            "SELECT kid, pkcs8 FROM {} ORDER BY created_at, kid LIMIT 1",
            self.table
        );
        if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .fetch_optional(self.db.pool())
            .await?
        {
            let (kid, stored): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let pkcs8 = self.open(&kid, &stored)?;
            return Ok(SigningKey::from_pkcs8(kid, pkcs8)?);
        }
        let key = SigningKey::generate()?;
        let insert = format!(
            "INSERT INTO {} (kid, pkcs8, created_at) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(key.kid())
            .bind(self.sealer.seal(key.pkcs8(), &self.context(key.kid())))
            .bind(unix_now())
            .execute(self.db.pool())
            .await?;
        // Another replica may have made one at the same moment: the oldest wins.
        Box::pin(self.get()).await
    }

    /// The key's PKCS#8; a value that does not open (plaintext included) is an error.
    fn open(&self, kid: &str, stored: &str) -> anyhow::Result<Vec<u8>> {
        self.sealer
            .open(stored, &self.context(kid))
            .map(|pkcs8| pkcs8.to_vec())
            .map_err(|e| anyhow::anyhow!("{} {kid}: {e}", self.purpose))
    }

    /// Re-seals the keys `scope` names under the current master key; returns how many
    /// it rewrote. Safe to re-run: a row changed meanwhile is left as it is.
    pub async fn reseal(&self, scope: ResealScope) -> anyhow::Result<u64> {
        let select = format!("SELECT kid, pkcs8 FROM {}", self.table);
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .fetch_all(self.db.pool())
            .await?;
        let update = format!(
            "UPDATE {} SET pkcs8 = $1 WHERE kid = $2 AND pkcs8 = $3",
            self.table
        );
        let mut done = 0;
        for row in rows {
            let (kid, stored): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if !scope.wants(&self.sealer, &stored) {
                continue;
            }
            let pkcs8 = if Sealer::is_sealed(&stored) {
                self.open(&kid, &stored)?
            } else {
                // Before sealing, the column held the key's PKCS#8 in base64.
                data_encoding::BASE64.decode(stored.as_bytes())?
            };
            done += sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .bind(self.sealer.seal(&pkcs8, &self.context(&kid)))
                .bind(&kid)
                .bind(&stored)
                .execute(self.db.pool())
                .await?
                .rows_affected();
        }
        if done > 0 {
            super::scrub_replaced(&self.db).await?;
        }
        Ok(done)
    }
}
