//! Settings in the service's database: every change to a tenant's settings or a user's
//! preferences is a new version row (the document after it, and before), written in
//! the same commit as its audit record and its `settings.updated` event; flags are one
//! row per tenant (or the platform) and name.

use serde_json::{Value, json};
use somagent_common::audit::AuditRecord;
use somagent_common::auth::Principal;
use somagent_common::clock::unix_now_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::db::{Db, DbError, Migration};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;
use sqlx::Row;

use crate::domain::schema::{self, Field};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "settings",
        include_str!("../migrations/0001_settings.sql"),
    ),
    Migration::portable(2, "secrets", include_str!("../migrations/0002_secrets.sql")),
];

/// Whose document: the tenant's settings, or one user's preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    User(String),
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Self::Tenant => "tenant".into(),
            Self::User(subject) => format!("user:{subject}"),
        }
    }

    fn fields(&self) -> &'static [Field] {
        match self {
            Self::Tenant => schema::TENANT,
            Self::User(_) => schema::PREFERENCES,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Tenant => "settings",
            Self::User(_) => "preferences",
        }
    }
}

/// A document as stored (only what was set) at a version.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub document: Value,
    pub version: i64,
    pub changed_at_ms: i64,
    pub changed_by: String,
}

impl Stored {
    fn empty() -> Self {
        Self {
            document: json!({}),
            version: 0,
            changed_at_ms: 0,
            changed_by: String::new(),
        }
    }
}

/// One version, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub version: i64,
    pub document: Value,
    pub previous: Value,
    pub changed_by: String,
    pub changed_at_ms: i64,
}

/// A flag as it applies to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub enabled: bool,
    /// `tenant`, `platform` or `unset`.
    pub source: &'static str,
}

/// The tenant id under which the platform's flag defaults are kept.
const PLATFORM: &str = "";
/// The most versions one page lists.
pub const MAX_VERSIONS: u32 = 200;

#[derive(Clone)]
pub struct SettingsStore {
    db: Db,
    outbox: Outbox,
}

impl SettingsStore {
    pub fn new(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// The document of `scope` as it stands, defaults filled in.
    pub async fn resolved(
        &self,
        tenant: &TenantId,
        scope: &Scope,
    ) -> Result<(Value, Stored), DbError> {
        let stored = self.current(tenant, scope).await?;
        Ok((schema::resolve(scope.fields(), &stored.document), stored))
    }

    async fn current(&self, tenant: &TenantId, scope: &Scope) -> Result<Stored, DbError> {
        let row = sqlx::query(
            "SELECT document, version, changed_at_ms, changed_by FROM settings_versions \
             WHERE tenant_id = $1 AND scope = $2 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(scope.key())
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            None => Ok(Stored::empty()),
            Some(r) => Ok(Stored {
                document: parse(&r.try_get::<String, _>(0)?)?,
                version: r.try_get(1)?,
                changed_at_ms: r.try_get(2)?,
                changed_by: r.try_get(3)?,
            }),
        }
    }

    /// Applies the merge patch `patch` to the document of `scope`: a new version,
    /// audited and announced, unless nothing changed.
    pub async fn patch(
        &self,
        principal: &Principal,
        scope: &Scope,
        patch: &Value,
        if_version: i64,
    ) -> Result<(Value, Stored), ApiError> {
        if !patch.is_object() {
            return Err(ApiError::validation(
                "patch",
                "is a JSON object (a merge patch, RFC 7396)",
            ));
        }
        let tenant = &principal.tenant;
        let before = self
            .current(tenant, scope)
            .await
            .map_err(ApiError::internal)?;
        if if_version != 0 && if_version != before.version {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the {} changed since version {if_version}: they are at version {} now",
                    scope.name(),
                    before.version
                ),
            )
            .with_details(json!({"version": before.version})));
        }
        let document = schema::merge_patch(&before.document, patch);
        schema::check(scope.fields(), &document)
            .map_err(|m| ApiError::validation(&m.path, m.message))?;
        if document == before.document {
            return Ok((schema::resolve(scope.fields(), &document), before));
        }
        let now = unix_now_ms();
        let version = before.version + 1;
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let written = sqlx::query(
            "INSERT INTO settings_versions (tenant_id, scope, version, document, previous, changed_by, changed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(scope.key())
        .bind(version)
        .bind(document.to_string())
        .bind(before.document.to_string())
        .bind(&principal.subject)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| ApiError::internal(DbError::from(e)))?
        .rows_affected();
        if written == 0 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the {} changed at the same moment; try again", scope.name()),
            ));
        }
        let kind = format!("settings.{}_changed", scope.name());
        let mut audit = AuditRecord::by("settings", kind, principal)
            .on(scope.name(), Some(&version.to_string()))
            .action("patch")
            .with("previous", &before.document)
            .with("current", &document);
        if let Scope::User(subject) = scope {
            audit = audit.subject(subject.clone());
        }
        let audit = audit.envelope();
        let subject = match scope {
            Scope::User(s) => Some(s.as_str()),
            Scope::Tenant => None,
        };
        let updated = json!({"version": version, "subject": subject});
        self.commit_change(tx, tenant, &audit, scope.name(), updated)
            .await?;
        let stored = Stored {
            document,
            version,
            changed_at_ms: now,
            changed_by: principal.subject.clone(),
        };
        Ok((schema::resolve(scope.fields(), &stored.document), stored))
    }

    /// Commits `tx` with the change's audit record and a `settings.updated` event saying
    /// `what` changed.
    async fn commit_change(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        tenant: &TenantId,
        audit: &Envelope,
        what: &str,
        extra: Value,
    ) -> Result<(), ApiError> {
        let mut data = json!({"what": what});
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        let updated = Envelope::new("settings.updated", "settings", tenant.clone(), data);
        self.outbox
            .commit_and_publish(
                tx,
                &[
                    (topics::AUDIT, tenant.as_str(), audit),
                    (topics::SETTINGS_UPDATED, tenant.as_str(), &updated),
                ],
            )
            .await
            .map_err(ApiError::internal)
    }

    /// The versions of `scope`, newest first.
    pub async fn versions(
        &self,
        tenant: &TenantId,
        scope: &Scope,
        limit: u32,
    ) -> Result<Vec<Version>, DbError> {
        let rows = sqlx::query(
            "SELECT version, document, previous, changed_by, changed_at_ms FROM settings_versions \
             WHERE tenant_id = $1 AND scope = $2 ORDER BY version DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(scope.key())
        .bind(i64::from(limit.clamp(1, MAX_VERSIONS)))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(version_of).collect()
    }

    pub async fn version(
        &self,
        tenant: &TenantId,
        scope: &Scope,
        version: i64,
    ) -> Result<Option<Version>, DbError> {
        let row = sqlx::query(
            "SELECT version, document, previous, changed_by, changed_at_ms FROM settings_versions \
             WHERE tenant_id = $1 AND scope = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(scope.key())
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(version_of).transpose()
    }

    /// Every flag set for the tenant or by the platform, as it applies to the tenant.
    pub async fn flags(&self, tenant: &TenantId) -> Result<Vec<Flag>, DbError> {
        let rows = sqlx::query(
            "SELECT name, enabled, tenant_id FROM settings_flags WHERE tenant_id = $1 OR tenant_id = $2 \
             ORDER BY name, tenant_id DESC",
        )
        .bind(tenant.as_str())
        .bind(PLATFORM)
        .fetch_all(self.db.pool())
        .await?;
        let mut flags: Vec<Flag> = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0)?;
            // The tenant's own row sorts first (its id is not empty) and wins.
            if flags.last().is_some_and(|f| f.name == name) {
                continue;
            }
            let owner: String = r.try_get(2)?;
            flags.push(Flag {
                name,
                enabled: r.try_get::<i64, _>(1)? == 1,
                source: if owner == PLATFORM {
                    "platform"
                } else {
                    "tenant"
                },
            });
        }
        Ok(flags)
    }

    pub async fn flag(&self, tenant: &TenantId, name: &str) -> Result<Flag, DbError> {
        Ok(self
            .flags(tenant)
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| Flag {
                name: name.to_owned(),
                enabled: false,
                source: "unset",
            }))
    }

    /// Sets (or with `enabled: None` clears) a flag for the tenant, or the platform's
    /// default; audited with what it was, announced.
    pub async fn put_flag(
        &self,
        principal: &Principal,
        name: &str,
        enabled: Option<bool>,
        platform: bool,
    ) -> Result<Flag, ApiError> {
        check_flag_name(name)?;
        let tenant = &principal.tenant;
        let owner = if platform { PLATFORM } else { tenant.as_str() };
        let before = self.flag(tenant, name).await.map_err(ApiError::internal)?;
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let now = unix_now_ms();
        match enabled {
            Some(on) => sqlx::query(
                "INSERT INTO settings_flags (tenant_id, name, enabled, changed_by, changed_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, name) DO UPDATE SET \
                 enabled = excluded.enabled, changed_by = excluded.changed_by, changed_at_ms = excluded.changed_at_ms",
            )
            .bind(owner)
            .bind(name)
            .bind(i64::from(on))
            .bind(&principal.subject)
            .bind(now),
            None => sqlx::query("DELETE FROM settings_flags WHERE tenant_id = $1 AND name = $2")
                .bind(owner)
                .bind(name),
        }
        .execute(&mut *tx)
        .await
        .map_err(|e| ApiError::internal(DbError::from(e)))?;
        let audit = AuditRecord::by("settings", "settings.flag_changed", principal)
            .on("flag", Some(name))
            .action(if enabled.is_some() { "set" } else { "clear" })
            .with("platform", platform)
            .with(
                "previous",
                json!({"enabled": before.enabled, "source": before.source}),
            )
            .with("enabled", enabled)
            .envelope();
        let updated = json!({"flag": name, "platform": platform});
        self.commit_change(tx, tenant, &audit, "flags", updated)
            .await?;
        self.flag(tenant, name).await.map_err(ApiError::internal)
    }
}

fn check_flag_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name",
            "is 1 to 64 of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit",
        ))
    }
}

fn parse(text: &str) -> Result<Value, DbError> {
    serde_json::from_str(text)
        .map_err(|e| DbError::Invalid(format!("a stored settings document: {e}")))
}

fn version_of(r: &sqlx::any::AnyRow) -> Result<Version, DbError> {
    Ok(Version {
        version: r.try_get(0)?,
        document: parse(&r.try_get::<String, _>(1)?)?,
        previous: parse(&r.try_get::<String, _>(2)?)?,
        changed_by: r.try_get(3)?,
        changed_at_ms: r.try_get(4)?,
    })
}
