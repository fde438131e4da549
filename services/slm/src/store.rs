//! The model profiles that are stored, in portable SQL: tenants' tunings (every query
//! names its tenant) and the profiles platform admins set (the rows of [`PLATFORM`]).

use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::pricing::Price;
use crate::domain::profile::{Profile, TenantProfile};

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "profiles",
        include_str!("../migrations/0001_profiles.sql"),
    ),
    Migration::portable(
        2,
        "profile_scopes",
        include_str!("../migrations/0002_profile_scopes.sql"),
    ),
    Migration::portable(
        3,
        "profile_dimensions",
        include_str!("../migrations/0003_profile_dimensions.sql"),
    ),
];

/// The tenant id of platform profiles' rows: no tenant id can be `*`.
const PLATFORM: &str = "*";

#[derive(Clone)]
pub struct ProfileStore {
    db: Db,
}

const COLUMNS: &str = "name, upstream, model, temperature, max_tokens, fallbacks, prompt_price, completion_price, currency, timeout_ms, base, dimensions";

impl ProfileStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// `tenant_id` is a tenant's id or [`PLATFORM`], which no tenant id can be.
    async fn rows(&self, tenant_id: &str, name: Option<&str>) -> Result<Vec<Profile>, DbError> {
        let mut sql = format!("SELECT {COLUMNS} FROM model_profiles WHERE tenant_id = $1");
        if name.is_some() {
            sql.push_str(" AND name = $2");
        }
        sql.push_str(" ORDER BY name");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
        if let Some(name) = name {
            query = query.bind(name);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        db::all(&rows)
    }

    /// The profiles platform admins have set.
    pub async fn platform_list(&self) -> Result<Vec<Profile>, DbError> {
        Ok(self
            .rows(PLATFORM, None)
            .await?
            .into_iter()
            .map(|p| Profile {
                platform: true,
                ..p
            })
            .collect())
    }

    /// The tenant's tunings. Rows from before tenant profiles had a base are left out:
    /// they carry prices the tenant set.
    pub async fn tenant_list(&self, tenant: &TenantId) -> Result<Vec<TenantProfile>, DbError> {
        Ok(self
            .rows(tenant.as_str(), None)
            .await?
            .into_iter()
            .filter_map(tuning)
            .collect())
    }

    pub async fn tenant_get(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<TenantProfile>, DbError> {
        Ok(self
            .rows(tenant.as_str(), Some(name))
            .await?
            .into_iter()
            .find_map(tuning))
    }

    /// Creates or replaces the platform profile `profile.name`.
    pub async fn put_platform(&self, profile: &Profile, now: i64) -> Result<(), DbError> {
        self.put(PLATFORM, profile, "", now).await
    }

    /// Creates or replaces the tenant's profile `profile.name`; it keeps no upstream,
    /// model or price of its own.
    pub async fn put_tenant(
        &self,
        tenant: &TenantId,
        profile: &TenantProfile,
        now: i64,
    ) -> Result<(), DbError> {
        let row = Profile {
            name: profile.name.clone(),
            upstream: String::new(),
            model: String::new(),
            temperature: profile.temperature,
            max_tokens: profile.max_tokens,
            fallbacks: profile.fallbacks.clone(),
            price: Price::default(),
            currency: String::new(),
            timeout_ms: profile.timeout_ms,
            platform: false,
            base: None,
            dimensions: None,
        };
        self.put(tenant.as_str(), &row, &profile.base, now).await
    }

    /// `tenant_id` is a tenant's id or [`PLATFORM`].
    async fn put(
        &self,
        tenant_id: &str,
        profile: &Profile,
        base: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO model_profiles (tenant_id, name, upstream, model, temperature, max_tokens, fallbacks, \
             prompt_price, completion_price, currency, timeout_ms, updated_at, base, dimensions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET upstream = excluded.upstream, model = excluded.model, \
             temperature = excluded.temperature, max_tokens = excluded.max_tokens, fallbacks = excluded.fallbacks, \
             prompt_price = excluded.prompt_price, completion_price = excluded.completion_price, \
             currency = excluded.currency, timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at, \
             base = excluded.base, dimensions = excluded.dimensions",
        )
        .bind(tenant_id)
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
        .bind(base)
        .bind(profile.dimensions.map(i64::from))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_tenant(&self, tenant: &TenantId, name: &str) -> Result<bool, DbError> {
        self.delete(tenant.as_str(), name).await
    }

    pub async fn delete_platform(&self, name: &str) -> Result<bool, DbError> {
        self.delete(PLATFORM, name).await
    }

    /// `tenant_id` is a tenant's id or [`PLATFORM`].
    async fn delete(&self, tenant_id: &str, name: &str) -> Result<bool, DbError> {
        Ok(
            sqlx::query("DELETE FROM model_profiles WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .execute(self.db.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// How many tenants' profiles are named `name` or build on it: a platform profile
    /// may neither take a name tenants use nor vanish from under their tunings.
    pub async fn tenant_uses(&self, name: &str) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM model_profiles WHERE tenant_id <> $1 AND (name = $2 OR base = $2)",
        )
        .bind(PLATFORM)
        .bind(name)
        .fetch_one(self.db.pool())
        .await?;
        row.try_get::<i64, _>(0).map_err(DbError::Query)
    }
}

fn tuning(p: Profile) -> Option<TenantProfile> {
    Some(TenantProfile {
        base: p.base?,
        name: p.name,
        temperature: p.temperature,
        max_tokens: p.max_tokens,
        fallbacks: p.fallbacks,
        timeout_ms: p.timeout_ms,
    })
}

impl FromAnyRow for Profile {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let base: String = r.try_get(10)?;
        Ok(Profile {
            name: r.try_get(0)?,
            upstream: r.try_get(1)?,
            model: r.try_get(2)?,
            temperature: r.try_get::<Option<f64>, _>(3)?.map(|t| t as f32),
            max_tokens: r.try_get::<Option<i64>, _>(4)?.map(|t| t as u32),
            fallbacks: db::get_words(r, 5, |w| Some(w.to_owned()))?,
            price: Price {
                prompt_micros_per_1k: r.try_get(6)?,
                completion_micros_per_1k: r.try_get(7)?,
            },
            currency: r.try_get(8)?,
            timeout_ms: db::get_u32(r, 9)?,
            platform: false,
            base: Some(base).filter(|b| !b.is_empty()),
            dimensions: r.try_get::<Option<i64>, _>(11)?.map(|d| d as u32),
        })
    }
}
