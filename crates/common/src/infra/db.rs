//! The relational store: SQLite (embedded) or PostgreSQL, behind one pool type so SQL
//! is written once (`$1` bind parameters work on both).
//!
//! Each service owns its data: on SQLite a file of its own, on PostgreSQL a schema of
//! its own in the shared database (the pool sets `search_path`). Migrations are
//! versioned per scope (`common`, then the service's own), checked by hash so an
//! applied migration that was edited stops start-up instead of drifting silently.
//!
//! Stores read rows by column position: a record type implements [`FromAnyRow`] once
//! and [`all`] / [`optional`] map a page or a single row with it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::clock::unix_now_ms;
use crate::config::{DatabaseUrl, redact};

/// Which engine is behind the pool, for the rare statement that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    /// Rows one multi-row `INSERT` of `columns` columns should carry. SQLite finds each
    /// numbered parameter's name by a walk of the statement's list of them, so binding
    /// n parameters costs n²: a 500-row insert of 17 columns spent 50 ms binding,
    /// most of the ledger's intake. About 500 parameters a statement keeps that small;
    /// PostgreSQL's limit is 65,535 parameters and it pays nothing per parameter.
    pub fn rows_per_insert(self, columns: usize) -> usize {
        let parameters = match self {
            DbKind::Sqlite => 512,
            DbKind::Postgres => 16_384,
        };
        (parameters / columns.max(1)).max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database: {0}")]
    Invalid(String),
    #[error(
        "database migration {scope}/{version} ({name}) was changed after it was applied; add a new migration instead"
    )]
    MigrationChanged {
        scope: String,
        version: i64,
        name: String,
    },
}

/// One migration; `sqlite` and `postgres` hold the same change for each engine
/// (usually the same text).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL runs unchanged on both engines.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }

    fn sql(&self, kind: DbKind) -> &'static str {
        match kind {
            DbKind::Sqlite => self.sqlite,
            DbKind::Postgres => self.postgres,
        }
    }
}

/// Tables every service database has: consumed event ids, for idempotent consumers.
pub const COMMON_MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "processed_events",
        "CREATE TABLE IF NOT EXISTS processed_events (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        processed_at BIGINT NOT NULL,
        PRIMARY KEY (consumer, event_id)
    )",
    ),
    Migration::portable(
        2,
        "outbox",
        "CREATE TABLE IF NOT EXISTS outbox (
        id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        event_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    ),
];

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

impl Db {
    /// Opens `service`'s database at `url` (its own SQLite file, or its own schema in
    /// PostgreSQL), creating what is missing.
    pub async fn connect(url: &DatabaseUrl, service: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let schema = service.replace('-', "_");
        match url {
            DatabaseUrl::Sqlite { path } => {
                let path = path.to_string_lossy().replace("{service}", service);
                Self::sqlite(Path::new(&path)).await
            }
            DatabaseUrl::Postgres(raw) => Self::postgres(raw, &schema).await,
        }
    }

    /// A SQLite database file (created with its parent directory if missing).
    pub async fn sqlite(path: &Path) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                DbError::Invalid(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let url = format!("sqlite://{shown}?mode=rwc");
        let options = AnyConnectOptions::from_str(&url).map_err(|source| DbError::Connect {
            url: shown.clone(),
            source,
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers and the one writer proceed together; FULL sync so
                    // an acknowledged commit survives a power cut, not just a crash.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect { url: shown, source })?;
        Ok(Self {
            pool,
            kind: DbKind::Sqlite,
        })
    }

    /// A PostgreSQL database; every connection works in `schema`, created if missing.
    pub async fn postgres(url: &str, schema: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(DbError::Invalid(format!("invalid schema name `{schema}`")));
        }
        let shown = redact(url);
        let options = AnyConnectOptions::from_str(url).map_err(|source| DbError::Connect {
            url: shown.clone(),
            source,
        })?;
        let connect_error = |source| DbError::Connect {
            url: shown.clone(),
            source,
        };
        let bootstrap = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        bootstrap
            // The schema name was checked to be [A-Za-z0-9_] above.
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            ))))
            .await
            .map_err(connect_error)?;
        bootstrap.close().await;
        let set_path = format!("SET search_path TO \"{schema}\"");
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(set_path))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self {
            pool,
            kind: DbKind::Postgres,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// A transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// one that read first and then wrote would fail with "database is locked" when
    /// another connection wrote in between, where this one waits its turn under the
    /// busy timeout.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, DbError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies the migrations of `scope` not applied yet, each in its own transaction,
    /// after checking that the applied ones are unchanged.
    pub async fn migrate(&self, scope: &str, migrations: &[Migration]) -> Result<(), DbError> {
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    scope TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at BIGINT NOT NULL,
                    PRIMARY KEY (scope, version)
                )",
            )
            .await?;
        let mut conn = self.pool.acquire().await?;
        if self.kind == DbKind::Postgres {
            // Replicas starting together must not race each other's migrations.
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(lock_key(scope))
                .execute(&mut *conn)
                .await?;
        }
        let result = self.apply(&mut conn, scope, migrations).await;
        if self.kind == DbKind::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock_key(scope))
                .execute(&mut *conn)
                .await;
        }
        result
    }

    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        scope: &str,
        migrations: &[Migration],
    ) -> Result<(), DbError> {
        let applied =
            sqlx::query("SELECT version, checksum FROM schema_migrations WHERE scope = $1")
                .bind(scope)
                .fetch_all(&mut *conn)
                .await?;
        let applied: Vec<(i64, String)> = applied
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for migration in migrations {
            let sql = migration.sql(self.kind);
            let checksum = checksum(sql);
            if let Some((_, recorded)) = applied.iter().find(|(v, _)| *v == migration.version) {
                if *recorded != checksum {
                    return Err(DbError::MigrationChanged {
                        scope: scope.to_owned(),
                        version: migration.version,
                        name: migration.name.to_owned(),
                    });
                }
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (scope, version, name, checksum, applied_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(scope)
            .bind(migration.version)
            .bind(migration.name)
            .bind(&checksum)
            .bind(unix_now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                scope,
                version = migration.version,
                name = migration.name,
                "migration applied"
            );
        }
        Ok(())
    }
}

/// Marks `event_id` as handled by `consumer` inside `tx`; false when it already was.
/// Do the consumer's writes in the same transaction so a redelivered event is handled
/// once, whatever moment a crash came at.
pub async fn claim_event(
    tx: &mut Transaction<'static, Any>,
    consumer: &str,
    event_id: &uuid::Uuid,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id.to_string())
    .bind(unix_now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A record read from one result row by column position: the stores select their
/// columns in a fixed order and write the mapping once, for one row or a page.
pub trait FromAnyRow: Sized {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error>;
}

/// Every row as a `T`; the first that does not map fails the lot.
pub fn all<T: FromAnyRow>(rows: &[AnyRow]) -> Result<Vec<T>, DbError> {
    rows.iter()
        .map(T::from_row)
        .collect::<Result<_, _>>()
        .map_err(DbError::Query)
}

/// The row, if there is one, as a `T`.
pub fn optional<T: FromAnyRow>(row: Option<AnyRow>) -> Result<Option<T>, DbError> {
    row.as_ref()
        .map(T::from_row)
        .transpose()
        .map_err(DbError::Query)
}

/// The bind parameters `$from, $from+1, …` of a list `count` long, for an `IN (…)`:
/// the values are bound, never written into the SQL.
pub fn numbered_params(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `VALUES` list of a multi-row `INSERT` of `rows` rows of `columns` columns:
/// `($1, $2), ($3, $4), …`, to bind row by row, column by column.
pub fn values_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", numbered_params(r * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A flag the portable schemas keep as a `BIGINT` 0 or 1; only 1 is true.
pub fn get_bool(row: &AnyRow, index: usize) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(index)? == 1)
}

/// A count or limit stored as `BIGINT` (`Any` has no unsigned types); the stores only
/// write values that fit.
pub fn get_u32(row: &AnyRow, index: usize) -> Result<u32, sqlx::Error> {
    Ok(row.try_get::<i64, _>(index)? as u32)
}

/// A list stored as space-separated words, each read by `parse`; a word it refuses is
/// left out rather than failing the whole row.
pub fn get_words<T>(
    row: &AnyRow,
    index: usize,
    parse: impl FnMut(&str) -> Option<T>,
) -> Result<Vec<T>, sqlx::Error> {
    Ok(row
        .try_get::<String, _>(index)?
        .split_whitespace()
        .filter_map(parse)
        .collect())
}

/// A text column read by `parse`; a value it refuses is a decode error saying
/// `unknown`, since the store only writes values the code knows.
pub fn get_parsed<T>(
    row: &AnyRow,
    index: usize,
    parse: impl FnOnce(&str) -> Option<T>,
    unknown: &str,
) -> Result<T, sqlx::Error> {
    parse(&row.try_get::<String, _>(index)?)
        .ok_or_else(|| sqlx::Error::Decode(unknown.to_owned().into()))
}

/// FNV-1a: enough to notice an edited migration; not a security measure.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn lock_key(scope: &str) -> i64 {
    i64::from_str_radix(&checksum(scope)[..15], 16).unwrap_or(0)
}

impl crate::readiness::Probe for Db {
    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
