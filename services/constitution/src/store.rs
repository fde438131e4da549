//! Constitution versions per tenant and the service's signing key, in portable SQL.
//! The key is sealed under the master key (`somagent_common::secrets`), bound to its id.

use std::sync::Arc;

use somagent_common::auth::SigningKey;
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::secrets::{ResealScope, Sealer, StoredSigningKey};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "constitutions",
    include_str!("../migrations/0001_constitutions.sql"),
)];

#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: u32,
    pub document: String,
    pub hash: String,
    pub signature: String,
    pub key_id: String,
    pub published_at: i64,
}

impl FromAnyRow for StoredVersion {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(StoredVersion {
            version: db::get_u32(r, 0)?,
            document: r.try_get(1)?,
            hash: r.try_get(2)?,
            signature: r.try_get(3)?,
            key_id: r.try_get(4)?,
            published_at: r.try_get(5)?,
        })
    }
}

#[derive(Clone)]
pub struct ConstitutionStore {
    db: Db,
    key: StoredSigningKey,
}

impl ConstitutionStore {
    pub fn new(db: Db, sealer: Arc<Sealer>) -> Self {
        let key = StoredSigningKey::new(
            db.clone(),
            sealer,
            "constitution_keys",
            "constitution/signing_key",
        );
        Self { db, key }
    }

    /// The service's key, made on first start (race-safe across replicas).
    pub async fn signing_key(&self) -> anyhow::Result<SigningKey> {
        self.key.get().await
    }

    /// Re-seals the signing keys `scope` names under the current master key; returns
    /// how many it rewrote.
    pub async fn reseal(&self, scope: ResealScope) -> anyhow::Result<u64> {
        self.key.reseal(scope).await
    }

    pub async fn latest(&self, tenant: &TenantId) -> Result<Option<StoredVersion>, DbError> {
        self.one(
            "SELECT version, document, hash, signature, key_id, published_at FROM constitutions \
             WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
            tenant,
            None,
        )
        .await
    }

    pub async fn version(
        &self,
        tenant: &TenantId,
        version: u32,
    ) -> Result<Option<StoredVersion>, DbError> {
        self.one(
            "SELECT version, document, hash, signature, key_id, published_at FROM constitutions \
             WHERE tenant_id = $1 AND version = $2",
            tenant,
            Some(version),
        )
        .await
    }

    async fn one(
        &self,
        sql: &'static str,
        tenant: &TenantId,
        version: Option<u32>,
    ) -> Result<Option<StoredVersion>, DbError> {
        let mut query = sqlx::query(sql).bind(tenant);
        if let Some(v) = version {
            query = query.bind(i64::from(v));
        }
        let row = query.fetch_optional(self.db.pool()).await?;
        db::optional(row)
    }

    /// Stores `version`; false if that version was taken meanwhile (publish again).
    pub async fn insert(
        &self,
        tenant: &TenantId,
        v: &StoredVersion,
        by: &str,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO constitutions (tenant_id, version, document, hash, signature, key_id, published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, version) DO NOTHING",
        )
        .bind(tenant)
        .bind(i64::from(v.version))
        .bind(&v.document)
        .bind(&v.hash)
        .bind(&v.signature)
        .bind(&v.key_id)
        .bind(by)
        .bind(v.published_at)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}
