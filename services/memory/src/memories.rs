//! Key-value memories: put (the text embedded and indexed for words), get, list,
//! delete, and expiry. The vector is written before the row: a row is never there
//! without its vector, and a vector without a row (a write that failed half-way) is
//! never returned, since every hit is read back from the rows.

use serde_json::{Map, Value};
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::tenant::TenantId;
use uuid::Uuid;

use crate::domain::scope::{Scope, check_key};
use crate::embedder::{Embedder, ForUser};
use crate::store::{MemoryRow, MemoryStore, OwnerRow};
use crate::vectors::{Collection, Kind, Payload, Point, Vectors};

/// The longest text a memory may hold, in characters.
pub const MAX_TEXT: usize = 32_768;
/// The largest metadata object, as JSON.
pub const MAX_METADATA: usize = 16_384;
/// The longest a memory may live: ten years.
const MAX_TTL: u64 = 10 * 365 * 24 * 3600;

/// Reads metadata given as JSON text: an object (empty text is an empty one).
pub fn metadata(raw: &str) -> Result<Map<String, Value>, ApiError> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    if raw.len() > MAX_METADATA {
        return Err(ApiError::validation(
            "metadata",
            format!("is at most {MAX_METADATA} bytes of JSON"),
        ));
    }
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::validation("metadata", "is a JSON object")),
    }
}

pub fn scope(raw: &str) -> Result<Scope, ApiError> {
    Scope::parse(raw).map_err(|e| ApiError::validation("scope", e))
}

/// The id of the memory `key` of `owner`: its row's and its vector's.
fn memory_id(tenant: &TenantId, owner: &OwnerRow, key: &str) -> Uuid {
    let name = format!(
        "{tenant}\n{}\n{}\n{}\n{key}",
        owner.kind, owner.id, owner.subject
    );
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such memory")
}

/// The vector backend's payload for a memory.
pub fn memory_payload(row: &MemoryRow) -> Payload {
    Payload {
        kind: Kind::Memory,
        owner_kind: row.owner.kind.clone(),
        owner_id: row.owner.id.clone(),
        subject: row.owner.subject.clone(),
        source: row.id.clone(),
        position: 0,
        metadata: row.metadata.clone(),
    }
}

#[derive(Clone)]
pub struct Memories {
    pub store: MemoryStore,
    pub vectors: Vectors,
    pub embedder: Embedder,
}

/// What a put asks for.
pub struct Put<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub text: &'a str,
    pub metadata_json: &'a str,
    pub ttl_seconds: Option<u64>,
}

impl Memories {
    pub async fn put(&self, principal: &Principal, put: Put<'_>) -> Result<MemoryRow, ApiError> {
        principal.require(Capability::MemoryWrite)?;
        let owner = OwnerRow::from(&scope(put.scope)?.owner(&principal.subject));
        check_key(put.key).map_err(|e| ApiError::validation("key", e))?;
        if put.text.trim().is_empty() {
            return Err(ApiError::validation("text", "is not empty"));
        }
        if put.text.chars().count() > MAX_TEXT {
            return Err(ApiError::validation(
                "text",
                format!("is at most {MAX_TEXT} characters"),
            ));
        }
        let metadata = metadata(put.metadata_json)?;
        let now = unix_now();
        let expires_at = match put.ttl_seconds {
            None => None,
            Some(ttl) if (1..=MAX_TTL).contains(&ttl) => Some(now + ttl as i64),
            Some(_) => {
                return Err(ApiError::validation(
                    "ttl_seconds",
                    format!("is between 1 and {MAX_TTL}"),
                ));
            }
        };
        let tenant = &principal.tenant;
        let (collection, mut vectors) = self
            .embedder
            .embed(&ForUser::of(principal), vec![put.text.to_owned()])
            .await?;
        let vector = vectors.pop().unwrap_or_default();
        let before = self
            .store
            .memory(tenant, &owner, put.key)
            .await
            .map_err(ApiError::internal)?;
        // The same key of the same owner is always the same vector: two writers of it
        // at once replace one vector, never leave two.
        let id = memory_id(tenant, &owner, put.key);
        let row = MemoryRow {
            id: id.to_string(),
            owner,
            key: put.key.to_owned(),
            text: put.text.to_owned(),
            metadata,
            model: collection.model.clone(),
            dimensions: collection.dimensions,
            created_at: before.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
            expires_at,
        };
        self.vectors
            .upsert(
                tenant,
                &collection,
                vec![Point {
                    id,
                    vector,
                    payload: memory_payload(&row),
                }],
            )
            .await
            .map_err(vector_error)?;
        let mut tx = self.store.begin().await.map_err(ApiError::internal)?;
        MemoryStore::put_memory(&mut tx, tenant, &row)
            .await
            .map_err(ApiError::internal)?;
        MemoryStore::index(
            &mut tx,
            self.store.db().kind(),
            tenant,
            &row.id,
            Kind::Memory,
            &row.text,
        )
        .await
        .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        // A memory embedded before with another model leaves that model's collection.
        if let Some(before) = before
            && (before.model != row.model || before.dimensions != row.dimensions)
        {
            let old = Collection {
                model: before.model,
                dimensions: before.dimensions,
            };
            if let Err(e) = self.vectors.delete(tenant, &old, &[id]).await {
                tracing::warn!(error = %e, memory = %row.id, "an old vector of a re-embedded memory was left behind");
            }
        }
        Ok(row)
    }

    pub async fn get(
        &self,
        principal: &Principal,
        scope_raw: &str,
        key: &str,
    ) -> Result<MemoryRow, ApiError> {
        principal.require(Capability::MemoryRead)?;
        let owner = OwnerRow::from(&scope(scope_raw)?.owner(&principal.subject));
        check_key(key).map_err(|e| ApiError::validation("key", e))?;
        let row = self
            .store
            .memory(&principal.tenant, &owner, key)
            .await
            .map_err(ApiError::internal)?;
        row.filter(|r| r.expires_at.is_none_or(|t| t > unix_now()))
            .ok_or_else(not_found)
    }

    pub async fn list(
        &self,
        principal: &Principal,
        scope_raw: &str,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<MemoryRow>, String), ApiError> {
        principal.require(Capability::MemoryRead)?;
        let owner = OwnerRow::from(&scope(scope_raw)?.owner(&principal.subject));
        let limit = limit.clamp(1, 200);
        let rows = self
            .store
            .list_memories(&principal.tenant, &owner, after, limit + 1, unix_now())
            .await
            .map_err(ApiError::internal)?;
        Ok(page(rows, limit as usize, |m| m.key.clone()))
    }

    pub async fn delete(
        &self,
        principal: &Principal,
        scope_raw: &str,
        key: &str,
    ) -> Result<(), ApiError> {
        principal.require(Capability::MemoryWrite)?;
        let owner = OwnerRow::from(&scope(scope_raw)?.owner(&principal.subject));
        check_key(key).map_err(|e| ApiError::validation("key", e))?;
        let tenant = &principal.tenant;
        let mut tx = self.store.begin().await.map_err(ApiError::internal)?;
        let Some(row) = MemoryStore::memory_in(&mut tx, tenant, &owner, key)
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(not_found());
        };
        self.remove(tx, tenant, row).await
    }

    /// Removes the memory's row, text and vector.
    async fn remove(
        &self,
        mut tx: crate::store::Tx,
        tenant: &TenantId,
        row: MemoryRow,
    ) -> Result<(), ApiError> {
        MemoryStore::delete_memory(&mut tx, tenant, &row.id)
            .await
            .map_err(ApiError::internal)?;
        MemoryStore::unindex(&mut tx, self.store.db().kind(), tenant, &row.id)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        let collection = Collection {
            model: row.model,
            dimensions: row.dimensions,
        };
        let id = Uuid::parse_str(&row.id).map_err(ApiError::internal)?;
        // The row is gone, so no search returns it; a vector left by a failure here is
        // never read back.
        if let Err(e) = self.vectors.delete(tenant, &collection, &[id]).await {
            tracing::warn!(error = %e, memory = %row.id, "the vector of a deleted memory was left behind");
        }
        Ok(())
    }

    /// Removes memories past their time; how many.
    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let expired = self
            .store
            .expired(unix_now(), 500)
            .await
            .map_err(ApiError::internal)?;
        let count = expired.len();
        for (tenant, row) in expired {
            let tx = self.store.begin().await.map_err(ApiError::internal)?;
            self.remove(tx, &tenant, row).await?;
        }
        Ok(count)
    }
}

/// The first `limit` of `rows` (fetched one more than that) and the cursor of the next
/// page, empty on the last.
pub fn page<T>(mut rows: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&cursor).unwrap_or_default()
    } else {
        String::new()
    };
    (rows, next)
}

pub fn vector_error(e: crate::vectors::VectorError) -> ApiError {
    match e {
        crate::vectors::VectorError::WrongSize { .. } | crate::vectors::VectorError::NotANumber => {
            ApiError::validation("vector", e.to_string())
        }
        crate::vectors::VectorError::Backend(_) => {
            ApiError::unavailable("the vector store cannot be reached", anyhow::anyhow!(e))
        }
    }
}
