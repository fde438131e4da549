//! The capsule repository's tables, in portable SQL: publishers' keys, who owns each
//! capsule id, submitted versions and their reviews, each tenant's installations (with
//! their log), ratings and counts. Every query that reads a tenant's rows names the
//! tenant; what another tenant may see of a version is decided in `domain::access`.

use somagent_common::clock::unix_now_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "capsules",
    include_str!("../migrations/0001_capsules.sql"),
)];

/// The publisher of the capsules the platform ships: no tenant id can be this.
pub const PLATFORM: &str = ":platform";

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub public_key: String,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl FromAnyRow for KeyRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            tenant: r.try_get(1)?,
            name: r.try_get(2)?,
            public_key: r.try_get(3)?,
            created_by: r.try_get(4)?,
            created_at: r.try_get(5)?,
            revoked_at: r.try_get(6)?,
        })
    }
}

const KEY_COLUMNS: &str = "id, tenant_id, name, public_key, created_by, created_at, revoked_at";

/// One submitted version of a capsule.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub id: String,
    pub capsule_id: String,
    pub version: String,
    pub version_key: String,
    pub publisher: String,
    pub submitted_by: String,
    /// `private` (the publisher's tenant only) or `public` (the marketplace).
    pub visibility: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    pub kind: String,
    pub name: String,
    pub summary: String,
    pub category: String,
    pub tags: Vec<String>,
    /// Canonical JSON: what the attestation hashes.
    pub definition: String,
    pub attestation_hash: String,
    pub signature: String,
    pub key_id: String,
    pub notes: String,
    pub reviewer: Option<String>,
    pub reviewed_at: Option<i64>,
    pub review_notes: Option<String>,
    pub created_at: i64,
}

const PACKAGE_COLUMNS: &str = "id, capsule_id, version, version_key, publisher, submitted_by, \
     visibility, status, kind, name, summary, category, tags, definition, attestation_hash, \
     signature, key_id, notes, reviewer, reviewed_at, review_notes, created_at";

impl FromAnyRow for Package {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let tags: String = r.try_get(12)?;
        Ok(Self {
            id: r.try_get(0)?,
            capsule_id: r.try_get(1)?,
            version: r.try_get(2)?,
            version_key: r.try_get(3)?,
            publisher: r.try_get(4)?,
            submitted_by: r.try_get(5)?,
            visibility: r.try_get(6)?,
            status: r.try_get(7)?,
            kind: r.try_get(8)?,
            name: r.try_get(9)?,
            summary: r.try_get(10)?,
            category: r.try_get(11)?,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            definition: r.try_get(13)?,
            attestation_hash: r.try_get(14)?,
            signature: r.try_get(15)?,
            key_id: r.try_get(16)?,
            notes: r.try_get(17)?,
            reviewer: r.try_get(18)?,
            reviewed_at: r.try_get(19)?,
            review_notes: r.try_get(20)?,
            created_at: r.try_get(21)?,
        })
    }
}

impl Package {
    /// Lowercase words a catalog search matches against.
    pub fn search_text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.capsule_id,
            self.name,
            self.summary,
            self.category,
            self.tags.join(" ")
        )
        .to_lowercase()
    }
}

/// A tenant's installation of a capsule in one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Installation {
    pub capsule_id: String,
    pub environment: String,
    pub version: String,
    pub previous_version: Option<String>,
    pub installed_by: String,
    pub installed_at: i64,
    pub notes: String,
}

impl FromAnyRow for Installation {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            capsule_id: r.try_get(0)?,
            environment: r.try_get(1)?,
            version: r.try_get(2)?,
            previous_version: r.try_get(3)?,
            installed_by: r.try_get(4)?,
            installed_at: r.try_get(5)?,
            notes: r.try_get(6)?,
        })
    }
}

const INSTALLATION_COLUMNS: &str =
    "capsule_id, environment, version, previous_version, installed_by, installed_at, notes";

#[derive(Debug, Clone, PartialEq)]
pub struct Rating {
    pub stars: u32,
    pub comment: String,
    pub updated_at: i64,
    /// Whether the reader wrote it.
    pub mine: bool,
}

/// How often a capsule was downloaded and run, and what its users think of it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Standing {
    pub downloads: i64,
    pub runs: i64,
    pub ratings: i64,
    pub stars_total: i64,
}

/// Which counter a use adds to.
#[derive(Debug, Clone, Copy)]
pub enum Use {
    Download,
    Run,
}

#[derive(Clone)]
pub struct CapsuleStore {
    db: Db,
}

impl CapsuleStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn add_key(&self, key: &KeyRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO capsule_keys (id, tenant_id, name, public_key, created_by, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&key.id)
        .bind(&key.tenant)
        .bind(&key.name)
        .bind(&key.public_key)
        .bind(&key.created_by)
        .bind(key.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn keys(&self, tenant: &TenantId) -> Result<Vec<KeyRow>, DbError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM capsule_keys WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 200"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    /// Any tenant's key, by id: what a version names as its signer.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, DbError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM capsule_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Revokes `tenant`'s key `id`; `None` if it has no such key.
    pub async fn revoke_key(&self, tenant: &TenantId, id: &str) -> Result<Option<KeyRow>, DbError> {
        sqlx::query(
            "UPDATE capsule_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(self.key(id).await?.filter(|k| k.tenant == tenant.as_str()))
    }

    /// Records a submitted version. The first publisher of a capsule id owns it:
    /// another's version of it, or a version that exists, is a conflict.
    pub async fn submit(&self, package: &Package) -> Result<(), ApiError> {
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        sqlx::query(
            "INSERT INTO capsule_owners (capsule_id, publisher, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (capsule_id) DO NOTHING",
        )
        .bind(&package.capsule_id)
        .bind(&package.publisher)
        .bind(package.created_at)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
        let owner: String =
            sqlx::query_scalar("SELECT publisher FROM capsule_owners WHERE capsule_id = $1")
                .bind(&package.capsule_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(ApiError::internal)?;
        if owner != package.publisher {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "capsule id `{}` belongs to another publisher; choose another id",
                    package.capsule_id
                ),
            ));
        }
        let search_text = package.search_text();
        let tags = serde_json::to_string(&package.tags).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO capsule_packages (id, capsule_id, version, version_key, publisher, submitted_by, \
             visibility, status, kind, name, summary, category, tags, search_text, definition, \
             attestation_hash, signature, key_id, notes, reviewer, reviewed_at, review_notes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20, $21, $22, $23)",
        )
        .bind(&package.id)
        .bind(&package.capsule_id)
        .bind(&package.version)
        .bind(&package.version_key)
        .bind(&package.publisher)
        .bind(&package.submitted_by)
        .bind(&package.visibility)
        .bind(&package.status)
        .bind(&package.kind)
        .bind(&package.name)
        .bind(&package.summary)
        .bind(&package.category)
        .bind(tags)
        .bind(search_text)
        .bind(&package.definition)
        .bind(&package.attestation_hash)
        .bind(&package.signature)
        .bind(&package.key_id)
        .bind(&package.notes)
        .bind(&package.reviewer)
        .bind(package.reviewed_at)
        .bind(&package.review_notes)
        .bind(package.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            somagent_common::error::on_constraint(
                e,
                "capsule_packages_capsule_id_version",
                "this version of the capsule exists; versions are immutable, submit a new one",
            )
        })?;
        tx.commit().await.map_err(ApiError::internal)?;
        Ok(())
    }

    pub async fn package(&self, id: &str) -> Result<Option<Package>, DbError> {
        let sql = format!("SELECT {PACKAGE_COLUMNS} FROM capsule_packages WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    pub async fn version(&self, capsule: &str, version: &str) -> Result<Option<Package>, DbError> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM capsule_packages WHERE capsule_id = $1 AND version = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(capsule)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Submissions `tenant` published, and with `public_queue` every public one; of
    /// `status` when given; newest first.
    pub async fn submissions(
        &self,
        tenant: &TenantId,
        public_queue: bool,
        status: Option<&str>,
    ) -> Result<Vec<Package>, DbError> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM capsule_packages \
             WHERE (publisher = $1 OR ($2 = 1 AND visibility = 'public')) AND ($3 = '' OR status = $3) \
             ORDER BY created_at DESC, id LIMIT 200"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(i64::from(public_queue))
            .bind(status.unwrap_or(""))
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    /// Every approved version `tenant` may see (public, its own, the platform's), of
    /// one capsule or all, newest version first within each capsule.
    pub async fn approved(
        &self,
        tenant: &TenantId,
        capsule: Option<&str>,
    ) -> Result<Vec<Package>, DbError> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM capsule_packages \
             WHERE status = 'approved' AND (visibility = 'public' OR publisher = $1) \
             AND ($2 = '' OR capsule_id = $2) \
             ORDER BY capsule_id, version_key DESC LIMIT 5000"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(capsule.unwrap_or(""))
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    /// Records a review of a pending version; `None` if it is no longer pending.
    pub async fn review(
        &self,
        package: &str,
        reviewer_tenant: &TenantId,
        reviewer: &str,
        approve: bool,
        notes: &str,
    ) -> Result<Option<Package>, DbError> {
        let now = unix_now_ms();
        let status = if approve { "approved" } else { "rejected" };
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE capsule_packages SET status = $2, reviewer = $3, reviewed_at = $4, review_notes = $5 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(package)
        .bind(status)
        .bind(reviewer)
        .bind(now)
        .bind(notes)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO capsule_reviews (id, package_id, reviewer_tenant, reviewer, decision, notes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(package)
        .bind(reviewer_tenant.as_str())
        .bind(reviewer)
        .bind(if approve { "approve" } else { "reject" })
        .bind(notes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.package(package).await
    }

    pub async fn count_use(&self, capsule: &str, what: Use) -> Result<(), DbError> {
        let (downloads, runs) = match what {
            Use::Download => (1_i64, 0_i64),
            Use::Run => (0, 1),
        };
        sqlx::query(
            "INSERT INTO capsule_counts (capsule_id, downloads, runs) VALUES ($1, $2, $3) \
             ON CONFLICT (capsule_id) DO UPDATE SET downloads = capsule_counts.downloads + $2, \
             runs = capsule_counts.runs + $3",
        )
        .bind(capsule)
        .bind(downloads)
        .bind(runs)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// One capsule's downloads, runs and ratings.
    pub async fn standing(&self, capsule: &str) -> Result<Standing, DbError> {
        let mut standing = Standing::default();
        if let Some(row) =
            sqlx::query("SELECT downloads, runs FROM capsule_counts WHERE capsule_id = $1")
                .bind(capsule)
                .fetch_optional(self.db.pool())
                .await?
        {
            standing.downloads = row.try_get(0)?;
            standing.runs = row.try_get(1)?;
        }
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(stars), 0) AS BIGINT) FROM capsule_ratings WHERE capsule_id = $1",
        )
        .bind(capsule)
        .fetch_one(self.db.pool())
        .await?;
        standing.ratings = row.try_get(0)?;
        standing.stars_total = row.try_get(1)?;
        Ok(standing)
    }

    /// Downloads, runs and ratings of each capsule that has any.
    pub async fn standings(&self) -> Result<std::collections::HashMap<String, Standing>, DbError> {
        let mut out = std::collections::HashMap::<String, Standing>::new();
        for row in sqlx::query("SELECT capsule_id, downloads, runs FROM capsule_counts")
            .fetch_all(self.db.pool())
            .await?
        {
            let entry = out.entry(row.try_get(0)?).or_default();
            entry.downloads = row.try_get(1)?;
            entry.runs = row.try_get(2)?;
        }
        for row in sqlx::query(
            "SELECT capsule_id, COUNT(*), CAST(SUM(stars) AS BIGINT) FROM capsule_ratings GROUP BY capsule_id",
        )
        .fetch_all(self.db.pool())
        .await?
        {
            let entry = out.entry(row.try_get(0)?).or_default();
            entry.ratings = row.try_get(1)?;
            entry.stars_total = row.try_get(2)?;
        }
        Ok(out)
    }

    /// Sets the caller's rating of a capsule (one per user, replaced when given again).
    pub async fn rate(
        &self,
        capsule: &str,
        tenant: &TenantId,
        subject: &str,
        stars: u32,
        comment: &str,
    ) -> Result<(), DbError> {
        let now = unix_now_ms();
        sqlx::query(
            "INSERT INTO capsule_ratings (capsule_id, tenant_id, subject, stars, comment, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (capsule_id, tenant_id, subject) DO UPDATE SET stars = $4, comment = $5, updated_at = $6",
        )
        .bind(capsule)
        .bind(tenant.as_str())
        .bind(subject)
        .bind(i64::from(stars))
        .bind(comment)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// A capsule's ratings, newest first; who wrote them is not shown, but the
    /// reader's own is marked.
    pub async fn ratings(
        &self,
        capsule: &str,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<Vec<Rating>, DbError> {
        let rows = sqlx::query(
            "SELECT stars, comment, updated_at, CASE WHEN tenant_id = $2 AND subject = $3 THEN 1 ELSE 0 END \
             FROM capsule_ratings WHERE capsule_id = $1 ORDER BY updated_at DESC LIMIT 200",
        )
        .bind(capsule)
        .bind(tenant.as_str())
        .bind(subject)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Rating {
                    stars: db::get_u32(r, 0)?,
                    comment: r.try_get(1)?,
                    updated_at: r.try_get(2)?,
                    mine: db::get_bool(r, 3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub async fn installations(&self, tenant: &TenantId) -> Result<Vec<Installation>, DbError> {
        let sql = format!(
            "SELECT {INSTALLATION_COLUMNS} FROM capsule_installations WHERE tenant_id = $1 \
             ORDER BY capsule_id, environment"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    pub async fn installation(
        &self,
        tenant: &TenantId,
        capsule: &str,
        environment: &str,
    ) -> Result<Option<Installation>, DbError> {
        let sql = format!(
            "SELECT {INSTALLATION_COLUMNS} FROM capsule_installations \
             WHERE tenant_id = $1 AND capsule_id = $2 AND environment = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(capsule)
            .bind(environment)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// Installs `version` (or upgrades to it, keeping the version it replaces to roll
    /// back to), and logs it.
    pub async fn install(
        &self,
        tenant: &TenantId,
        capsule: &str,
        environment: &str,
        version: &str,
        actor: &str,
        notes: &str,
    ) -> Result<Installation, DbError> {
        let now = unix_now_ms();
        let mut tx = self.db.begin().await?;
        let before: Option<String> = sqlx::query_scalar(
            "SELECT version FROM capsule_installations WHERE tenant_id = $1 AND capsule_id = $2 AND environment = $3",
        )
        .bind(tenant.as_str())
        .bind(capsule)
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = before.clone().filter(|b| b != version);
        sqlx::query(
            "INSERT INTO capsule_installations (tenant_id, capsule_id, environment, version, previous_version, \
             installed_by, installed_at, notes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, capsule_id, environment) DO UPDATE SET version = $4, \
             previous_version = COALESCE($5, capsule_installations.previous_version), \
             installed_by = $6, installed_at = $7, notes = $8",
        )
        .bind(tenant.as_str())
        .bind(capsule)
        .bind(environment)
        .bind(version)
        .bind(&previous)
        .bind(actor)
        .bind(now)
        .bind(notes)
        .execute(&mut *tx)
        .await?;
        let action = match &before {
            None => "install",
            Some(b) if b == version => "reinstall",
            Some(_) => "upgrade",
        };
        log(
            &mut tx,
            tenant,
            capsule,
            environment,
            action,
            Some(version),
            before.as_deref(),
            actor,
        )
        .await?;
        tx.commit().await?;
        self.installation(tenant, capsule, environment)
            .await?
            .ok_or_else(|| DbError::Invalid("an installation just written is missing".into()))
    }

    /// Goes back to the version installed before, and forgets it (a second rollback
    /// has nothing to go back to). `None` if nothing is installed; the installation
    /// unchanged if it has no previous version.
    pub async fn rollback(
        &self,
        tenant: &TenantId,
        capsule: &str,
        environment: &str,
        actor: &str,
    ) -> Result<Option<Installation>, DbError> {
        let Some(current) = self.installation(tenant, capsule, environment).await? else {
            return Ok(None);
        };
        let Some(previous) = current.previous_version.clone() else {
            return Ok(Some(current));
        };
        let mut tx = self.db.begin().await?;
        let changed = sqlx::query(
            "UPDATE capsule_installations SET version = $4, previous_version = NULL, installed_by = $5, \
             installed_at = $6 WHERE tenant_id = $1 AND capsule_id = $2 AND environment = $3 AND version = $7",
        )
        .bind(tenant.as_str())
        .bind(capsule)
        .bind(environment)
        .bind(&previous)
        .bind(actor)
        .bind(unix_now_ms())
        .bind(&current.version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            log(
                &mut tx,
                tenant,
                capsule,
                environment,
                "rollback",
                Some(&previous),
                Some(&current.version),
                actor,
            )
            .await?;
        }
        tx.commit().await?;
        self.installation(tenant, capsule, environment).await
    }

    /// Removes an installation; false if there was none.
    pub async fn uninstall(
        &self,
        tenant: &TenantId,
        capsule: &str,
        environment: &str,
        actor: &str,
    ) -> Result<bool, DbError> {
        let mut tx = self.db.begin().await?;
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM capsule_installations WHERE tenant_id = $1 AND capsule_id = $2 AND environment = $3 \
             RETURNING version",
        )
        .bind(tenant.as_str())
        .bind(capsule)
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?;
        if removed.is_some() {
            log(
                &mut tx,
                tenant,
                capsule,
                environment,
                "uninstall",
                None,
                removed.as_deref(),
                actor,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(removed.is_some())
    }
}

#[allow(clippy::too_many_arguments)]
async fn log(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &TenantId,
    capsule: &str,
    environment: &str,
    action: &str,
    version: Option<&str>,
    from: Option<&str>,
    actor: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO capsule_installation_log (id, tenant_id, capsule_id, environment, action, version, \
         from_version, actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant.as_str())
    .bind(capsule)
    .bind(environment)
    .bind(action)
    .bind(version)
    .bind(from)
    .bind(actor)
    .bind(unix_now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
