//! Identity's persistence: tenants, users, signing keys, API keys and refresh tokens,
//! in portable SQL that runs
//! on SQLite and PostgreSQL alike. Every user query names its tenant; TOTP secrets and
//! signing keys are sealed under the master key before they are written (`sealed`).

mod api_keys;
mod external;
mod recovery;
mod refresh;
mod sealed;

use std::sync::Arc;

use somagent_common::auth::{Capability, Role};
use somagent_common::clock::unix_now;
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::secrets::Sealer;
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

pub use api_keys::ApiKeyRecord;
pub use external::ExternalLink;
pub use refresh::{RefreshRecord, RefreshUse};
pub use sealed::ResealScope;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "identity",
        include_str!("../../migrations/0001_identity.sql"),
    ),
    Migration::portable(
        2,
        "api_keys",
        include_str!("../../migrations/0002_api_keys.sql"),
    ),
    Migration::portable(
        3,
        "refresh_tokens",
        include_str!("../../migrations/0003_refresh_tokens.sql"),
    ),
    Migration::portable(
        4,
        "mfa_recovery_codes",
        include_str!("../../migrations/0004_mfa_recovery_codes.sql"),
    ),
    Migration::portable(
        5,
        "external_identities",
        include_str!("../../migrations/0005_external_identities.sql"),
    ),
];

/// `SELECT <user columns> FROM users <rest>`, as one static string.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, username, password_hash, status, roles, capabilities, created_at, mfa_enabled FROM users ",
            $rest
        )
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub display_name: String,
    pub status: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub tenant_id: TenantId,
    pub username: String,
    pub password_hash: String,
    pub status: String,
    pub roles: Vec<Role>,
    pub capabilities: Vec<Capability>,
    pub created_at: i64,
    pub mfa_enabled: bool,
}

/// What a user update changes; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    pub status: Option<String>,
    /// New roles with the capabilities they grant.
    pub roles: Option<(Vec<Role>, Vec<Capability>)>,
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A user's active second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaState {
    /// Base32 TOTP secret.
    pub secret: String,
    /// The last time step a code was accepted for; codes of it and before are spent.
    pub last_step: Option<i64>,
}

#[derive(Clone)]
pub struct IdentityStore {
    db: Db,
    /// Seals TOTP secrets and signing keys before they are written (`sealed`).
    sealer: Arc<Sealer>,
}

fn join<T>(items: &[T], name: impl Fn(&T) -> &'static str) -> String {
    items.iter().map(name).collect::<Vec<_>>().join(" ")
}

impl IdentityStore {
    pub fn new(db: Db, sealer: Arc<Sealer>) -> Self {
        Self { db, sealer }
    }

    pub async fn tenant_count(&self) -> Result<i64, DbError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM tenants")
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)?)
    }

    /// Creates a tenant and its first user in one transaction: both or neither.
    pub async fn create_tenant_with_admin(
        &self,
        tenant: &Tenant,
        admin: &User,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO tenants (id, slug, display_name, status, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.slug)
        .bind(&tenant.display_name)
        .bind(&tenant.status)
        .bind(tenant.created_at)
        .execute(&mut *tx)
        .await?;
        insert_user(&mut tx, admin).await?;
        tx.commit().await
    }

    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, DbError> {
        self.one_tenant(
            "SELECT id, slug, display_name, status, created_at FROM tenants WHERE slug = $1",
            slug,
        )
        .await
    }

    pub async fn tenant_by_id(&self, id: &TenantId) -> Result<Option<Tenant>, DbError> {
        self.one_tenant(
            "SELECT id, slug, display_name, status, created_at FROM tenants WHERE id = $1 AND status <> 'deleted'",
            id.as_str(),
        )
        .await
    }

    async fn one_tenant(&self, sql: &'static str, key: &str) -> Result<Option<Tenant>, DbError> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Tenants in creation order (ids are time-ordered), after `after`.
    pub async fn list_tenants(&self, after: &str, limit: i64) -> Result<Vec<Tenant>, DbError> {
        let rows = sqlx::query(
            "SELECT id, slug, display_name, status, created_at FROM tenants WHERE id > $1 AND status <> 'deleted' ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// Changes a tenant's display name and/or status; `None` if there is no such
    /// (undeleted) tenant.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        display_name: Option<&str>,
        status: Option<&str>,
    ) -> Result<Option<Tenant>, DbError> {
        let changed = sqlx::query(
            "UPDATE tenants SET display_name = COALESCE($1, display_name), status = COALESCE($2, status) \
             WHERE id = $3 AND status <> 'deleted'",
        )
        .bind(display_name)
        .bind(status)
        .bind(id.as_str())
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        // Read back, including a tenant just marked deleted.
        self.one_tenant(
            "SELECT id, slug, display_name, status, created_at FROM tenants WHERE id = $1",
            id.as_str(),
        )
        .await
    }

    /// Adds a user to an existing tenant.
    pub async fn create_user(&self, user: &User) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        insert_user(&mut tx, user).await?;
        tx.commit().await
    }

    pub async fn user_by_id(&self, tenant: &TenantId, id: &str) -> Result<Option<User>, DbError> {
        let row = sqlx::query(select_users!("WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Applies `change` to a user of `tenant`; `None` if there is no such user.
    pub async fn update_user(
        &self,
        tenant: &TenantId,
        id: &str,
        change: &UserChange,
    ) -> Result<Option<User>, DbError> {
        let roles = change.roles.as_ref().map(|(r, _)| join(r, |r| r.as_str()));
        let caps = change.roles.as_ref().map(|(_, c)| join(c, |c| c.as_str()));
        let changed = sqlx::query(
            "UPDATE users SET status = COALESCE($1, status), roles = COALESCE($2, roles), \
             capabilities = COALESCE($3, capabilities), password_hash = COALESCE($4, password_hash) \
             WHERE tenant_id = $5 AND id = $6",
        )
        .bind(change.status.as_deref())
        .bind(roles)
        .bind(caps)
        .bind(change.password_hash.as_deref())
        .bind(tenant)
        .bind(id)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        self.user_by_id(tenant, id).await
    }

    /// Deletes a user of `tenant` with their API keys and refresh tokens, all or
    /// nothing; false if there was no such user.
    pub async fn delete_user(&self, tenant: &TenantId, id: &str) -> Result<bool, DbError> {
        let mut tx = self.db.begin().await?;
        for sql in [
            "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM api_keys WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM mfa_recovery_codes WHERE user_id IN \
             (SELECT id FROM users WHERE tenant_id = $1 AND id = $2)",
        ] {
            sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// A tenant's users in creation order, after `after`.
    pub async fn list_users(
        &self,
        tenant: &TenantId,
        after: &str,
        limit: i64,
    ) -> Result<Vec<User>, DbError> {
        let rows = sqlx::query(select_users!(
            "WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// The active users of `tenant` holding `tenant:admin`, at most `limit`, by id.
    pub async fn tenant_admins(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        // Capabilities are kept space-separated: pad both ends to match a whole word.
        let rows = sqlx::query(
            "SELECT id FROM users WHERE tenant_id = $1 AND status = 'active' \
             AND (' ' || capabilities || ' ') LIKE '% tenant:admin %' ORDER BY id LIMIT $2",
        )
        .bind(tenant)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(DbError::Query))
            .collect()
    }

    pub async fn user_by_username(
        &self,
        tenant: &TenantId,
        username: &str,
    ) -> Result<Option<User>, DbError> {
        let row = sqlx::query(select_users!("WHERE tenant_id = $1 AND username = $2"))
            .bind(tenant)
            .bind(username)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// The user's TOTP state, if MFA is active for them.
    pub async fn mfa_state(&self, user_id: &str) -> Result<Option<MfaState>, DbError> {
        let row = sqlx::query(
            "SELECT mfa_secret, mfa_last_step, tenant_id FROM users WHERE id = $1 AND mfa_enabled = 1 AND mfa_secret IS NOT NULL",
        )
        .bind(user_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant_id: String = row.try_get(2)?;
        Ok(Some(MfaState {
            secret: self.open_totp(&tenant_id, user_id, &row.try_get::<String, _>(0)?)?,
            last_step: row.try_get(1)?,
        }))
    }

    /// Stores a new, not yet active TOTP secret for a user without active MFA; false if
    /// MFA is already active (turning it off is a separate, deliberate step).
    pub async fn begin_mfa(
        &self,
        tenant: &TenantId,
        user_id: &str,
        secret: &str,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE users SET mfa_secret = $1, mfa_last_step = NULL \
             WHERE id = $2 AND tenant_id = $3 AND mfa_enabled = 0",
        )
        .bind(self.seal_totp(tenant.as_str(), user_id, secret))
        .bind(user_id)
        .bind(tenant)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The secret waiting to be confirmed, if the user has one and MFA is not active.
    pub async fn pending_mfa(
        &self,
        tenant: &TenantId,
        user_id: &str,
    ) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT mfa_secret FROM users WHERE id = $1 AND tenant_id = $2 AND mfa_enabled = 0 AND mfa_secret IS NOT NULL",
        )
        .bind(user_id)
        .bind(tenant)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| self.open_totp(tenant.as_str(), user_id, &r.try_get::<String, _>(0)?))
            .transpose()
    }

    /// Turns MFA on, recording the step of the code that proved it.
    pub async fn activate_mfa(&self, user_id: &str, step: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE users SET mfa_enabled = 1, mfa_last_step = $1 WHERE id = $2")
            .bind(step)
            .bind(user_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Records that a code of `step` was used; false if that step (or a later one) was
    /// already used, so the same code cannot log in twice.
    pub async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE users SET mfa_last_step = $1 WHERE id = $2 AND (mfa_last_step IS NULL OR mfa_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Signing keys still published (not retired, or retiring later), newest first.
    pub async fn active_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        let rows = sqlx::query(
            "SELECT kid, pkcs8, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(unix_now())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kid: String = r.try_get(0)?;
                let pkcs8 = self.open_signing_key(&kid, &r.try_get::<String, _>(1)?)?;
                Ok(StoredKey {
                    kid,
                    pkcs8,
                    created_at: r.try_get(2)?,
                    retired_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Schedules every published key but `keep` to leave the JWKS at `retire_at`.
    pub async fn retire_keys_except(&self, keep: &str, retire_at: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL",
        )
        .bind(retire_at)
        .bind(keep)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn insert_key(&self, key: &StoredKey) -> Result<(), DbError> {
        sqlx::query("INSERT INTO signing_keys (kid, pkcs8, created_at) VALUES ($1, $2, $3)")
            .bind(&key.kid)
            .bind(self.seal_signing_key(&key.kid, &key.pkcs8))
            .bind(key.created_at)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

impl FromAnyRow for User {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(User {
            id: r.try_get(0)?,
            tenant_id: r.try_get(1)?,
            username: r.try_get(2)?,
            password_hash: r.try_get(3)?,
            status: r.try_get(4)?,
            roles: db::get_words(r, 5, Role::parse)?,
            capabilities: db::get_words(r, 6, Capability::parse)?,
            created_at: r.try_get(7)?,
            mfa_enabled: db::get_bool(r, 8)?,
        })
    }
}

impl FromAnyRow for Tenant {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Tenant {
            id: r.try_get(0)?,
            slug: r.try_get(1)?,
            display_name: r.try_get(2)?,
            status: r.try_get(3)?,
            created_at: r.try_get(4)?,
        })
    }
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &User,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, tenant_id, username, password_hash, status, roles, capabilities, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&user.id)
    .bind(&user.tenant_id)
    .bind(&user.username)
    .bind(&user.password_hash)
    .bind(&user.status)
    .bind(join(&user.roles, |r| r.as_str()))
    .bind(join(&user.capabilities, |c| c.as_str()))
    .bind(user.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
