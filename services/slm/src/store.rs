//! The tenants' model profiles, in portable SQL; every query names its tenant.

use somagent_common::infra::db::{Db, DbError, Migration};
use sqlx::Row;

use crate::domain::pricing::Price;
use crate::domain::profile::Profile;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "profiles",
    include_str!("../migrations/0001_profiles.sql"),
)];

#[derive(Clone)]
pub struct ProfileStore {
    db: Db,
}

const COLUMNS: &str = "name, upstream, model, temperature, max_tokens, fallbacks, prompt_price, completion_price, currency, timeout_ms";

impl ProfileStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<Profile>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM model_profiles WHERE tenant_id = $1 ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(profile_row)
            .collect::<Result<_, _>>()
            .map_err(DbError::Query)
    }

    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<Profile>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM model_profiles WHERE tenant_id = $1 AND name = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref()
            .map(profile_row)
            .transpose()
            .map_err(DbError::Query)
    }

    /// Creates or replaces the tenant's profile `profile.name`.
    pub async fn put(&self, tenant: &str, profile: &Profile, now: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO model_profiles (tenant_id, name, upstream, model, temperature, max_tokens, fallbacks, \
             prompt_price, completion_price, currency, timeout_ms, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET upstream = excluded.upstream, model = excluded.model, \
             temperature = excluded.temperature, max_tokens = excluded.max_tokens, fallbacks = excluded.fallbacks, \
             prompt_price = excluded.prompt_price, completion_price = excluded.completion_price, \
             currency = excluded.currency, timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&profile.name)
        .bind(&profile.upstream)
        .bind(&profile.model)
        .bind(profile.temperature.map(f64::from))
        .bind(profile.max_tokens.map(i64::from))
        .bind(profile.fallbacks.join(" "))
        .bind(profile.price.prompt_micros_per_1k)
        .bind(profile.price.completion_micros_per_1k)
        .bind(&profile.currency)
        .bind(i64::from(profile.timeout_ms))
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, DbError> {
        Ok(
            sqlx::query("DELETE FROM model_profiles WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(self.db.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }
}

fn profile_row(r: &sqlx::any::AnyRow) -> Result<Profile, sqlx::Error> {
    let fallbacks: String = r.try_get(5)?;
    Ok(Profile {
        name: r.try_get(0)?,
        upstream: r.try_get(1)?,
        model: r.try_get(2)?,
        temperature: r.try_get::<Option<f64>, _>(3)?.map(|t| t as f32),
        max_tokens: r.try_get::<Option<i64>, _>(4)?.map(|t| t as u32),
        fallbacks: fallbacks.split_whitespace().map(str::to_owned).collect(),
        price: Price {
            prompt_micros_per_1k: r.try_get(6)?,
            completion_micros_per_1k: r.try_get(7)?,
        },
        currency: r.try_get(8)?,
        timeout_ms: r.try_get::<i64, _>(9)? as u32,
        platform: false,
    })
}
