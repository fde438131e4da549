//! Memories, documents and chunks in the service's database, and the full-text index
//! over their texts (FTS5 with BM25 on SQLite, a `simple` tsvector on PostgreSQL).
//! Every query names its tenant.

use serde_json::{Map, Value};
use somagent_common::infra::db::{
    self, Db, DbError, DbKind, FromAnyRow, Migration, numbered_params,
};
use somagent_common::tenant::TenantId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::domain::scope::Owner;
use crate::search::DOCUMENT_OWNER;
use crate::vectors::{Filter, Kind, OwnerMatch};

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "vectors",
        sqlite: include_str!("../migrations/0001_vectors.sqlite.sql"),
        postgres: include_str!("../migrations/0001_vectors.postgres.sql"),
    },
    Migration::portable(
        2,
        "memories",
        include_str!("../migrations/0002_memories.sql"),
    ),
    Migration {
        version: 3,
        name: "text_index",
        sqlite: include_str!("../migrations/0003_text_index.sqlite.sql"),
        postgres: include_str!("../migrations/0003_text_index.postgres.sql"),
    },
];

pub type Tx = Transaction<'static, Any>;

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRow {
    pub id: String,
    pub owner: OwnerRow,
    pub key: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub model: String,
    pub dimensions: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
}

/// An owner as stored (its kind owned, as read back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    pub kind: String,
    pub id: String,
    pub subject: String,
}

impl From<&Owner> for OwnerRow {
    fn from(o: &Owner) -> Self {
        Self {
            kind: o.kind.to_owned(),
            id: o.id.clone(),
            subject: o.subject.clone(),
        }
    }
}

impl OwnerRow {
    pub fn scope(&self) -> String {
        if self.id.is_empty() {
            self.kind.clone()
        } else {
            format!("{}:{}", self.kind, self.id)
        }
    }
}

fn metadata_of(raw: &str) -> Map<String, Value> {
    serde_json::from_str(raw).unwrap_or_default()
}

const MEMORY_COLUMNS: &str = "id, owner_kind, owner_id, subject, key, text, metadata, model, dimensions, created_at, updated_at, expires_at";

impl FromAnyRow for MemoryRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            owner: OwnerRow {
                kind: r.try_get(1)?,
                id: r.try_get(2)?,
                subject: r.try_get(3)?,
            },
            key: r.try_get(4)?,
            text: r.try_get(5)?,
            metadata: metadata_of(&r.try_get::<String, _>(6)?),
            model: r.try_get(7)?,
            dimensions: db::get_u32(r, 8)?,
            created_at: r.try_get(9)?,
            updated_at: r.try_get(10)?,
            expires_at: r.try_get(11)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRow {
    pub id: String,
    pub title: String,
    pub content_type: String,
    pub source: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub metadata: Map<String, Value>,
    pub object_key: String,
    pub status: String,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub error: String,
    pub model: String,
    pub dimensions: u32,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const DOCUMENT_COLUMNS: &str = "id, title, content_type, source, sha256, size_bytes, metadata, object_key, status, chunks_total, chunks_done, error, model, dimensions, created_by, created_at, updated_at";

impl DocumentRow {
    /// The document whose columns ([`DOCUMENT_COLUMNS`]) start at column `at`.
    fn read(r: &AnyRow, at: usize) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(at)?,
            title: r.try_get(at + 1)?,
            content_type: r.try_get(at + 2)?,
            source: r.try_get(at + 3)?,
            sha256: r.try_get(at + 4)?,
            size_bytes: r.try_get::<i64, _>(at + 5)? as u64,
            metadata: metadata_of(&r.try_get::<String, _>(at + 6)?),
            object_key: r.try_get(at + 7)?,
            status: r.try_get(at + 8)?,
            chunks_total: db::get_u32(r, at + 9)?,
            chunks_done: db::get_u32(r, at + 10)?,
            error: r.try_get(at + 11)?,
            model: r.try_get(at + 12)?,
            dimensions: db::get_u32(r, at + 13)?,
            created_by: r.try_get(at + 14)?,
            created_at: r.try_get(at + 15)?,
            updated_at: r.try_get(at + 16)?,
        })
    }
}

impl FromAnyRow for DocumentRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Self::read(r, 0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub id: String,
    pub document_id: String,
    pub position: u32,
    pub section: String,
    pub text: String,
    pub start: u64,
    pub end: u64,
}

impl FromAnyRow for ChunkRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            document_id: r.try_get(1)?,
            position: db::get_u32(r, 2)?,
            section: r.try_get(3)?,
            text: r.try_get(4)?,
            start: r.try_get::<i64, _>(5)? as u64,
            end: r.try_get::<i64, _>(6)? as u64,
        })
    }
}

const CHUNK_COLUMNS: &str = "id, document_id, position, section, text, start_offset, end_offset";

/// Words too common to say what a query is about: matching them would rank every
/// row of a tenant (and cost a scan of them) while adding nothing the meaning search
/// does not already weigh.
const COMMON_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have",
    "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not",
    "of", "on", "or", "our", "she", "should", "so", "some", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "to", "us", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// Words of a query as the full-text index matches them: letters and digits, lower
/// case, at most 32 (each also safe to put in an FTS5 or tsquery expression), without
/// the common words and single letters unless the query has nothing else.
pub fn query_words(query: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut common: Vec<String> = Vec::new();
    for word in query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
    {
        let is_common = COMMON_WORDS.contains(&word.as_str())
            || (word.chars().count() == 1 && !word.chars().all(|c| c.is_numeric()));
        let list = if is_common { &mut common } else { &mut words };
        if !list.contains(&word) && list.len() < 32 {
            list.push(word);
        }
    }
    if words.is_empty() { common } else { words }
}

/// How far a document's ingestion is.
pub struct Progress<'a> {
    /// `ingesting`, `ready` or `failed`.
    pub status: &'a str,
    pub chunks_total: u32,
    pub chunks_done: u32,
    /// Why it failed; empty otherwise.
    pub error: &'a str,
}

#[derive(Clone)]
pub struct MemoryStore {
    db: Db,
}

impl MemoryStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn begin(&self) -> Result<Tx, DbError> {
        self.db.begin().await
    }

    // ---- memories ----

    /// The memory of `owner` named `key`, expired or not.
    pub async fn memory(
        &self,
        tenant: &TenantId,
        owner: &OwnerRow,
        key: &str,
    ) -> Result<Option<MemoryRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE tenant_id = $1 AND owner_kind = $2 AND owner_id = $3 AND subject = $4 AND key = $5"
        )))
        .bind(tenant.as_str())
        .bind(&owner.kind)
        .bind(&owner.id)
        .bind(&owner.subject)
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    /// The same, in a transaction.
    pub async fn memory_in(
        tx: &mut Tx,
        tenant: &TenantId,
        owner: &OwnerRow,
        key: &str,
    ) -> Result<Option<MemoryRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE tenant_id = $1 AND owner_kind = $2 AND owner_id = $3 AND subject = $4 AND key = $5"
        )))
        .bind(tenant.as_str())
        .bind(&owner.kind)
        .bind(&owner.id)
        .bind(&owner.subject)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        db::optional(row)
    }

    /// Creates or replaces the memory (by owner and key; `row.id` is kept when it
    /// exists).
    pub async fn put_memory(
        tx: &mut Tx,
        tenant: &TenantId,
        row: &MemoryRow,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO memories (tenant_id, id, owner_kind, owner_id, subject, key, text, metadata, model, dimensions, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (tenant_id, owner_kind, owner_id, subject, key) DO UPDATE SET text = excluded.text, \
             metadata = excluded.metadata, model = excluded.model, dimensions = excluded.dimensions, \
             updated_at = excluded.updated_at, expires_at = excluded.expires_at",
        )
        .bind(tenant.as_str())
        .bind(&row.id)
        .bind(&row.owner.kind)
        .bind(&row.owner.id)
        .bind(&row.owner.subject)
        .bind(&row.key)
        .bind(&row.text)
        .bind(Value::Object(row.metadata.clone()).to_string())
        .bind(&row.model)
        .bind(i64::from(row.dimensions))
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn delete_memory(tx: &mut Tx, tenant: &TenantId, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM memories WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A page of the owner's live memories by key, after `after`.
    pub async fn list_memories(
        &self,
        tenant: &TenantId,
        owner: &OwnerRow,
        after: &str,
        limit: u32,
        now: i64,
    ) -> Result<Vec<MemoryRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE tenant_id = $1 AND owner_kind = $2 AND owner_id = $3 \
             AND subject = $4 AND key > $5 AND (expires_at IS NULL OR expires_at > $6) ORDER BY key LIMIT $7"
        )))
        .bind(tenant.as_str())
        .bind(&owner.kind)
        .bind(&owner.id)
        .bind(&owner.subject)
        .bind(after)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// The live memories of these ids.
    pub async fn memories_by_ids(
        &self,
        tenant: &TenantId,
        ids: &[String],
        now: i64,
    ) -> Result<Vec<MemoryRow>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE tenant_id = $1 AND (expires_at IS NULL OR expires_at > $2) AND id IN ({})",
            numbered_params(3, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(now);
        for id in ids {
            query = query.bind(id);
        }
        db::all(&query.fetch_all(self.db.pool()).await?)
    }

    /// Whether the tenant holds anything a search under `filter` could find: a live
    /// memory of one of its owners or, where chunks are asked for, any document's
    /// chunk. Search asks this first: embedding the question is most of a session
    /// turn's time, and most turns recall from scopes that hold nothing.
    pub async fn may_hold(
        &self,
        tenant: &TenantId,
        filter: &Filter,
        now: i64,
    ) -> Result<bool, DbError> {
        if filter.owners.is_empty() {
            // No owner named matches every owner: anything stored may be found.
            return Ok(true);
        }
        let wants = |kind: Kind| filter.kinds.is_empty() || filter.kinds.contains(&kind);
        let owners: Vec<&OwnerMatch> = filter
            .owners
            .iter()
            .filter(|o| o.kind != DOCUMENT_OWNER)
            .collect();
        if wants(Kind::Memory) && !owners.is_empty() {
            // Each owner is one probe of the (tenant, owner, key) index.
            let matches = (0..owners.len())
                .map(|i| {
                    let n = 3 + 3 * i;
                    format!(
                        "(owner_kind = ${n} AND owner_id = ${} AND subject = ${})",
                        n + 1,
                        n + 2
                    )
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            // Only parameter markers are formatted into the text.
            let sql = format!(
                "SELECT 1 FROM memories WHERE tenant_id = $1 AND (expires_at IS NULL OR expires_at > $2) \
                 AND ({matches}) LIMIT 1"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(now);
            for o in &owners {
                query = query.bind(&o.kind).bind(&o.id).bind(&o.subject);
            }
            if query.fetch_optional(self.db.pool()).await?.is_some() {
                return Ok(true);
            }
        }
        if wants(Kind::Chunk) && filter.owners.iter().any(|o| o.kind == DOCUMENT_OWNER) {
            let any = sqlx::query("SELECT 1 FROM chunks WHERE tenant_id = $1 LIMIT 1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
            return Ok(any.is_some());
        }
        Ok(false)
    }

    /// Memories past their time, oldest first: what the sweeper removes.
    pub async fn expired(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, MemoryRow)>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MEMORY_COLUMNS}, tenant_id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        )))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .filter_map(|r| {
                let tenant: String = r.try_get(12).ok()?;
                Some(
                    MemoryRow::from_row(r)
                        .map(|m| (TenantId::parse(&tenant).ok(), m))
                        .map_err(DbError::Query),
                )
            })
            .filter_map(|r| match r {
                Ok((Some(t), m)) => Some(Ok((t, m))),
                Ok((None, _)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    // ---- documents ----

    pub async fn document_by_hash(
        &self,
        tenant: &TenantId,
        sha256: &str,
    ) -> Result<Option<DocumentRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND sha256 = $2"
        )))
        .bind(tenant.as_str())
        .bind(sha256)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    pub async fn document(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<DocumentRow>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        db::optional(row)
    }

    pub async fn list_documents(
        &self,
        tenant: &TenantId,
        after: &str,
        limit: u32,
    ) -> Result<Vec<DocumentRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(tenant.as_str())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// Adds the document; `false` when the tenant has one of the same content already.
    pub async fn insert_document(
        &self,
        tenant: &TenantId,
        d: &DocumentRow,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "INSERT INTO documents (tenant_id, id, title, content_type, source, sha256, size_bytes, metadata, object_key, \
             status, chunks_total, chunks_done, error, model, dimensions, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (tenant_id, sha256) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&d.id)
        .bind(&d.title)
        .bind(&d.content_type)
        .bind(&d.source)
        .bind(&d.sha256)
        .bind(d.size_bytes as i64)
        .bind(Value::Object(d.metadata.clone()).to_string())
        .bind(&d.object_key)
        .bind(&d.status)
        .bind(i64::from(d.chunks_total))
        .bind(i64::from(d.chunks_done))
        .bind(&d.error)
        .bind(&d.model)
        .bind(i64::from(d.dimensions))
        .bind(&d.created_by)
        .bind(d.created_at)
        .bind(d.updated_at)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets what ingestion has reached. Only a document still there changes.
    pub async fn set_progress(
        tx: &mut Tx,
        tenant: &TenantId,
        id: &str,
        progress: &Progress<'_>,
        now: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE documents SET status = $3, chunks_total = $4, chunks_done = $5, error = $6, updated_at = $7 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(progress.status)
        .bind(i64::from(progress.chunks_total))
        .bind(i64::from(progress.chunks_done))
        .bind(progress.error)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the embedding model of the document's vectors.
    pub async fn set_model(
        tx: &mut Tx,
        tenant: &TenantId,
        id: &str,
        model: &str,
        dimensions: u32,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE documents SET model = $3, dimensions = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(model)
        .bind(i64::from(dimensions))
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes the document and its chunks (their texts too); `false` if it was not
    /// there.
    pub async fn delete_document(
        tx: &mut Tx,
        kind: DbKind,
        tenant: &TenantId,
        id: &str,
    ) -> Result<bool, DbError> {
        let chunks = sqlx::query("SELECT id FROM chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
        for row in chunks {
            let chunk: String = row.try_get(0).map_err(DbError::Query)?;
            Self::unindex(tx, kind, tenant, &chunk).await?;
        }
        sqlx::query("DELETE FROM chunks WHERE tenant_id = $1 AND document_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let done = sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores the document's chunks (replacing any from an earlier try).
    pub async fn put_chunks(
        tx: &mut Tx,
        tenant: &TenantId,
        chunks: &[ChunkRow],
    ) -> Result<(), DbError> {
        for c in chunks {
            sqlx::query(
                "INSERT INTO chunks (tenant_id, id, document_id, position, section, text, start_offset, end_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant_id, document_id, position) DO UPDATE SET id = excluded.id, section = excluded.section, \
                 text = excluded.text, start_offset = excluded.start_offset, end_offset = excluded.end_offset",
            )
            .bind(tenant.as_str())
            .bind(&c.id)
            .bind(&c.document_id)
            .bind(i64::from(c.position))
            .bind(&c.section)
            .bind(&c.text)
            .bind(c.start as i64)
            .bind(c.end as i64)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The document's chunks from `position` on, in order.
    pub async fn chunks_from(
        &self,
        tenant: &TenantId,
        document: &str,
        position: u32,
        limit: u32,
    ) -> Result<Vec<ChunkRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE tenant_id = $1 AND document_id = $2 AND position >= $3 ORDER BY position LIMIT $4"
        )))
        .bind(tenant.as_str())
        .bind(document)
        .bind(i64::from(position))
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    /// The chunks of these ids, each with its document's title, of documents that are
    /// ready (a document being ingested or deleted is not cited half-done).
    pub async fn chunks_by_ids(
        &self,
        tenant: &TenantId,
        ids: &[String],
    ) -> Result<Vec<(ChunkRow, DocumentRow)>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let columns: Vec<String> = CHUNK_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .chain(DOCUMENT_COLUMNS.split(", ").map(|c| format!("d.{c}")))
            .collect();
        let sql = format!(
            "SELECT {} FROM chunks c JOIN documents d ON d.tenant_id = c.tenant_id AND d.id = c.document_id \
             WHERE c.tenant_id = $1 AND d.status = 'ready' AND c.id IN ({})",
            columns.join(", "),
            numbered_params(2, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| {
                let chunk = ChunkRow::from_row(r)?;
                // The document's columns follow the chunk's seven.
                let doc = DocumentRow::read(r, 7)?;
                Ok((chunk, doc))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }

    // ---- the full-text index ----

    /// Indexes (or re-indexes) the text of a memory or chunk.
    pub async fn index(
        tx: &mut Tx,
        kind: DbKind,
        tenant: &TenantId,
        item: &str,
        item_kind: Kind,
        text: &str,
    ) -> Result<(), DbError> {
        match kind {
            DbKind::Sqlite => {
                let row = sqlx::query(
                    "INSERT INTO memory_text_items (tenant_id, item_id, kind) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, item_id) DO UPDATE SET kind = excluded.kind RETURNING row",
                )
                .bind(tenant.as_str())
                .bind(item)
                .bind(item_kind.as_str())
                .fetch_one(&mut **tx)
                .await?;
                let row: i64 = row.try_get(0).map_err(DbError::Query)?;
                sqlx::query("DELETE FROM memory_text WHERE rowid = $1")
                    .bind(row)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("INSERT INTO memory_text (rowid, text) VALUES ($1, $2)")
                    .bind(row)
                    .bind(text)
                    .execute(&mut **tx)
                    .await?;
            }
            DbKind::Postgres => {
                sqlx::query(
                    "INSERT INTO memory_text (tenant_id, item_id, kind, text) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, item_id) DO UPDATE SET kind = excluded.kind, text = excluded.text",
                )
                .bind(tenant.as_str())
                .bind(item)
                .bind(item_kind.as_str())
                .bind(text)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }

    pub async fn unindex(
        tx: &mut Tx,
        kind: DbKind,
        tenant: &TenantId,
        item: &str,
    ) -> Result<(), DbError> {
        match kind {
            DbKind::Sqlite => {
                let row = sqlx::query(
                    "DELETE FROM memory_text_items WHERE tenant_id = $1 AND item_id = $2 RETURNING row",
                )
                .bind(tenant.as_str())
                .bind(item)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(row) = row {
                    let row: i64 = row.try_get(0).map_err(DbError::Query)?;
                    sqlx::query("DELETE FROM memory_text WHERE rowid = $1")
                        .bind(row)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            DbKind::Postgres => {
                sqlx::query("DELETE FROM memory_text WHERE tenant_id = $1 AND item_id = $2")
                    .bind(tenant.as_str())
                    .bind(item)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// Items whose text has any of `words`, best first (BM25 on SQLite, ts_rank_cd on
    /// PostgreSQL), of the kinds asked (all when empty).
    pub async fn text_search(
        &self,
        tenant: &TenantId,
        words: &[String],
        kinds: &[Kind],
        limit: u32,
    ) -> Result<Vec<(String, Kind)>, DbError> {
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = if kinds.is_empty() {
            vec![Kind::Memory.as_str(), Kind::Chunk.as_str()]
        } else {
            kinds.iter().map(|k| k.as_str()).collect()
        };
        let rows = match self.db.kind() {
            DbKind::Sqlite => {
                // Each word quoted: the FTS5 query language never sees the user's text.
                let expression = words
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let sql = sqlite_text_query(kinds.len(), limit);
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(expression)
                    .bind(tenant.as_str());
                for k in &kinds {
                    query = query.bind(*k);
                }
                query.fetch_all(self.db.pool()).await?
            }
            DbKind::Postgres => {
                let expression = words.join(" | ");
                let sql = format!(
                    "SELECT item_id, kind FROM memory_text, to_tsquery('simple', $1) q \
                     WHERE tenant_id = $2 AND tsv @@ q AND kind IN ({}) ORDER BY ts_rank_cd(tsv, q) DESC LIMIT {limit}",
                    numbered_params(3, kinds.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(expression)
                    .bind(tenant.as_str());
                for k in &kinds {
                    query = query.bind(*k);
                }
                query.fetch_all(self.db.pool()).await?
            }
        };
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let kind: String = r.try_get(1)?;
                Ok((id, Kind::parse(&kind).unwrap_or(Kind::Memory)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }
}

/// The SQLite full-text query for `kinds` kinds, best `limit` first. CROSS JOIN keeps
/// the match as the outer loop: SQLite's planner otherwise may walk the tenant's items
/// and run the whole match once for each (measured: 126 ms instead of 1 ms for 545
/// chunks).
pub(crate) fn sqlite_text_query(kinds: usize, limit: u32) -> String {
    format!(
        "SELECT i.item_id, i.kind FROM memory_text f CROSS JOIN memory_text_items i ON i.row = f.rowid \
         WHERE memory_text MATCH $1 AND i.tenant_id = $2 AND i.kind IN ({}) ORDER BY bm25(memory_text) LIMIT {limit}",
        numbered_params(3, kinds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_safe_to_put_in_an_expression() {
        assert_eq!(
            query_words("What's \"SKU-4411\" OR NEAR(x)? what"),
            ["sku", "4411", "near"]
        );
        assert!(query_words("  ** ").is_empty());
        assert_eq!(query_words(&"w ".repeat(100)), ["w"]);
        assert_eq!(
            query_words(&(0..100).map(|i| format!("w{i} ")).collect::<String>()).len(),
            32
        );
    }

    #[test]
    fn common_words_are_searched_only_when_nothing_else_is_asked() {
        assert_eq!(
            query_words("What does the manual say about the 7 steps?"),
            ["manual", "say", "7", "steps"]
        );
        assert_eq!(query_words("Who is it?"), ["who", "is", "it"]);
    }
}
