//! Documents: added (the original kept in object storage, the same content added twice
//! is one document), ingested by a durable workflow (extract and chunk, then embed and
//! index batch by batch, progress on the document; a restart resumes where it was),
//! searched as passages, and deleted for real: row, chunks, texts, vectors, original.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::objects::Objects;
use somagent_common::tenant::TenantId;
use somagent_workflows::{
    Activity, ActivityError, ActivityOptions, Ctx, Engine, Registry, StartRequest, Workflow,
};
use uuid::Uuid;

use crate::domain::chunking::{self, ChunkRules};
use crate::domain::extract;
use crate::embedder::{BATCH, Embedder, ForUser};
use crate::memories::{metadata, page, vector_error};
use crate::search::chunk_payload;
use crate::store::{ChunkRow, DocumentRow, MemoryStore, Progress};
use crate::vectors::{Kind, Point, Vectors};

/// The workflow that ingests a document.
pub const INGEST: Workflow<IngestInput, u32> = Workflow::new("memory.ingest");
/// Reads the original, extracts its text, cuts and stores the chunks; their count.
/// The engine beats for a step while it runs, so the heartbeat timeout is only how
/// long a step on a worker that died holds the document up.
const EXTRACT: Activity<IngestInput, u32> = Activity::new(
    "memory.extract",
    ActivityOptions::new(Duration::from_secs(300), 3).with_heartbeat(Duration::from_secs(15)),
);
/// Embeds and indexes one batch of chunks; the chunks done after it.
const EMBED: Activity<Batch, u32> = Activity::new(
    "memory.embed",
    ActivityOptions::new(Duration::from_secs(300), 6)
        .with_backoff(Duration::from_secs(1))
        .with_heartbeat(Duration::from_secs(15)),
);
/// Marks the document ready, or failed with why.
const FINISH: Activity<Finish, ()> = Activity::new(
    "memory.finish",
    ActivityOptions::new(Duration::from_secs(10), 5),
);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestInput {
    pub tenant: TenantId,
    pub document_id: String,
    /// Who added it: the embeddings are metered to them.
    pub subject: String,
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub input: IngestInput,
    pub from: u32,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finish {
    pub input: IngestInput,
    pub error: Option<String>,
}

/// The run id of a document's ingestion.
pub fn run_id(document: &str) -> String {
    format!("ingest-{document}")
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such document")
}

fn activity_error(e: ApiError) -> ActivityError {
    let retry = matches!(
        e.code,
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::RateLimited | ErrorCode::Internal
    );
    if retry {
        ActivityError::retryable(e.code.as_str(), e.message)
    } else {
        ActivityError::fatal(e.code.as_str(), e.message)
    }
    .with_details(e.details)
}

fn db_error(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::retryable("unavailable", format!("the store failed: {e}"))
}

/// The object key of a document's original.
fn object_key(document: &str) -> String {
    format!("memory/documents/{document}")
}

/// The steps of ingestion, as the workflow's activities run them.
#[derive(Clone)]
pub struct Ingestion {
    pub store: MemoryStore,
    pub vectors: Vectors,
    pub embedder: Embedder,
    pub objects: Objects,
    pub rules: ChunkRules,
}

impl Ingestion {
    async fn document(&self, input: &IngestInput) -> Result<DocumentRow, ActivityError> {
        self.store
            .document(&input.tenant, &input.document_id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ActivityError::fatal("not_found", "the document was deleted"))
    }

    async fn extract(&self, input: IngestInput) -> Result<u32, ActivityError> {
        let doc = self.document(&input).await?;
        let original = self
            .objects
            .get(&input.tenant, &doc.object_key)
            .await
            .map_err(|e| {
                ActivityError::retryable("unavailable", format!("the original cannot be read: {e}"))
            })?
            .ok_or_else(|| ActivityError::fatal("not_found", "the document's original is gone"))?;
        let rules = self.rules;
        let content_type = doc.content_type.clone();
        let document_id = doc.id.clone();
        // Text extraction and chunking are CPU work: off the async threads.
        let chunks = tokio::task::spawn_blocking(move || {
            let text = extract::text_of(&content_type, &original)?;
            Ok::<_, String>(chunking::chunk(&text, rules))
        })
        .await
        .map_err(|e| ActivityError::fatal("internal", e.to_string()))?
        .map_err(|why| ActivityError::fatal("validation_failed", why))?;
        if chunks.is_empty() {
            return Err(ActivityError::fatal(
                "validation_failed",
                "the document has no text",
            ));
        }
        let rows: Vec<ChunkRow> = chunks
            .into_iter()
            .map(|c| ChunkRow {
                // The same place of the same document is the same chunk on a retry.
                id: Uuid::new_v5(
                    &Uuid::NAMESPACE_OID,
                    format!("{document_id}#{}", c.position).as_bytes(),
                )
                .to_string(),
                document_id: document_id.clone(),
                position: c.position,
                section: c.section,
                text: c.text,
                start: c.start as u64,
                end: c.end as u64,
            })
            .collect();
        let total = rows.len() as u32;
        let mut tx = self.store.begin().await.map_err(db_error)?;
        MemoryStore::put_chunks(&mut tx, &input.tenant, &rows)
            .await
            .map_err(db_error)?;
        MemoryStore::set_progress(
            &mut tx,
            &input.tenant,
            &doc.id,
            &Progress {
                status: "ingesting",
                chunks_total: total,
                chunks_done: 0,
                error: "",
            },
            unix_now(),
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(total)
    }

    async fn embed(&self, batch: Batch) -> Result<u32, ActivityError> {
        let input = &batch.input;
        let doc = self.document(input).await?;
        let chunks = self
            .store
            .chunks_from(&input.tenant, &doc.id, batch.from, batch.count)
            .await
            .map_err(db_error)?;
        let user = ForUser {
            tenant: input.tenant.clone(),
            subject: input.subject.clone(),
            capabilities: input.capabilities.clone(),
        };
        let texts = chunks
            .iter()
            .map(|c| {
                let section = if c.section.is_empty() {
                    String::new()
                } else {
                    format!("{}\n\n", c.section)
                };
                format!("{}{section}{}", title_line(&doc.title), c.text)
            })
            .collect();
        let (collection, vectors) = self
            .embedder
            .embed(&user, texts)
            .await
            .map_err(activity_error)?;
        if !doc.model.is_empty()
            && (doc.model != collection.model || doc.dimensions != collection.dimensions)
        {
            return Err(ActivityError::fatal(
                "conflict",
                "the embedding model changed while the document was ingested; add it again",
            ));
        }
        let points = chunks
            .iter()
            .zip(vectors)
            .map(|(c, vector)| {
                Ok(Point {
                    id: Uuid::parse_str(&c.id)
                        .map_err(|e| ActivityError::fatal("internal", e.to_string()))?,
                    vector,
                    payload: chunk_payload(c, &doc),
                })
            })
            .collect::<Result<Vec<_>, ActivityError>>()?;
        self.vectors
            .upsert(&input.tenant, &collection, points)
            .await
            .map_err(|e| activity_error(vector_error(e)))?;
        let done = batch.from + chunks.len() as u32;
        let kind = self.store.db().kind();
        let mut tx = self.store.begin().await.map_err(db_error)?;
        for c in &chunks {
            MemoryStore::index(
                &mut tx,
                kind,
                &input.tenant,
                &c.id,
                Kind::Chunk,
                &format!("{}\n{}", c.section, c.text),
            )
            .await
            .map_err(db_error)?;
        }
        let still_there = MemoryStore::set_progress(
            &mut tx,
            &input.tenant,
            &doc.id,
            &Progress {
                status: "ingesting",
                chunks_total: doc.chunks_total,
                chunks_done: done,
                error: "",
            },
            unix_now(),
        )
        .await
        .map_err(db_error)?
            && MemoryStore::set_model(
                &mut tx,
                &input.tenant,
                &doc.id,
                &collection.model,
                collection.dimensions,
            )
            .await
            .map_err(db_error)?;
        if !still_there {
            // Deleted while this batch ran: its vectors go too.
            drop(tx);
            let _ = self.vectors.delete_source(&input.tenant, &doc.id).await;
            return Err(ActivityError::fatal(
                "not_found",
                "the document was deleted",
            ));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }

    async fn finish(&self, finish: Finish) -> Result<(), ActivityError> {
        let input = &finish.input;
        let Some(doc) = self
            .store
            .document(&input.tenant, &input.document_id)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let (status, error) = match &finish.error {
            None => ("ready", ""),
            Some(why) => ("failed", why.as_str()),
        };
        let mut tx = self.store.begin().await.map_err(db_error)?;
        MemoryStore::set_progress(
            &mut tx,
            &input.tenant,
            &doc.id,
            &Progress {
                status,
                chunks_total: doc.chunks_total,
                chunks_done: doc.chunks_done,
                error,
            },
            unix_now(),
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }
}

/// A chunk's text is embedded under its document's title: a passage out of its
/// document loses its subject.
fn title_line(title: &str) -> String {
    if title.is_empty() {
        String::new()
    } else {
        format!("{title}\n")
    }
}

/// The ingestion workflow: extract, then batch after batch, publishing progress.
async fn ingest(ctx: Ctx, input: IngestInput) -> Result<u32, ActivityError> {
    let result = async {
        let total = ctx.activity(&EXTRACT, &input).await?;
        let mut done = 0;
        ctx.publish(&serde_json::json!({ "chunks_total": total, "chunks_done": done }));
        while done < total {
            let count = (total - done).min(BATCH as u32);
            done = ctx
                .activity(
                    &EMBED,
                    &Batch {
                        input: input.clone(),
                        from: done,
                        count,
                    },
                )
                .await?;
            ctx.publish(&serde_json::json!({ "chunks_total": total, "chunks_done": done }));
        }
        Ok(total)
    }
    .await;
    let error = result
        .as_ref()
        .err()
        .map(|e: &ActivityError| e.message.clone());
    ctx.cleanup()
        .activity(&FINISH, &Finish { input, error })
        .await?;
    result
}

/// Declares the ingestion workflow and its activities.
pub fn register(registry: &mut Registry, ingestion: Ingestion) {
    let steps = std::sync::Arc::new(ingestion);
    let s = steps.clone();
    registry.activity(&EXTRACT, move |_, input| {
        let s = s.clone();
        async move { s.extract(input).await }
    });
    let s = steps.clone();
    registry.activity(&EMBED, move |_, batch| {
        let s = s.clone();
        async move { s.embed(batch).await }
    });
    let s = steps;
    registry.activity(&FINISH, move |_, finish| {
        let s = s.clone();
        async move { s.finish(finish).await }
    });
    registry.workflow(&INGEST, ingest);
}

/// What an add asks for.
pub struct Add<'a> {
    pub title: &'a str,
    pub content_type: &'a str,
    pub content: Vec<u8>,
    pub metadata_json: &'a str,
    pub source: &'a str,
}

#[derive(Clone)]
pub struct Library {
    pub ingestion: Ingestion,
    pub engine: std::sync::Arc<dyn Engine>,
    pub max_bytes: usize,
}

impl Library {
    /// Stores the document and starts its ingestion; the document as it is now, and
    /// whether the same content was there already.
    pub async fn add(
        &self,
        principal: &Principal,
        add: Add<'_>,
    ) -> Result<(DocumentRow, bool), ApiError> {
        principal.require(Capability::MemoryWrite)?;
        let store = &self.ingestion.store;
        if add.content.is_empty() {
            return Err(ApiError::validation("content", "is not empty"));
        }
        if add.content.len() > self.max_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("a document is at most {} bytes", self.max_bytes),
            ));
        }
        let content_type =
            extract::content_type(add.content_type, add.source).ok_or_else(|| {
                ApiError::validation(
                    "content_type",
                    format!(
                        "is one of {} (or a file name with its extension)",
                        extract::CONTENT_TYPES.join(", ")
                    ),
                )
            })?;
        // What can be told at once is told at once; the rest is the ingestion's.
        match content_type {
            "application/pdf" if !add.content.starts_with(b"%PDF-") => {
                return Err(ApiError::validation("content", "is not a PDF"));
            }
            "application/pdf" => {}
            _ if std::str::from_utf8(&add.content).is_err() => {
                return Err(ApiError::validation("content", "is not UTF-8 text"));
            }
            _ => {}
        }
        let title = add.title.trim();
        if title.chars().count() > 300 {
            return Err(ApiError::validation("title", "is at most 300 characters"));
        }
        if add.source.chars().count() > 2000 {
            return Err(ApiError::validation("source", "is at most 2000 characters"));
        }
        let metadata = metadata(add.metadata_json)?;
        let sha256 = data_encoding::HEXLOWER
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &add.content).as_ref());
        let tenant = &principal.tenant;
        if let Some(existing) = store
            .document_by_hash(tenant, &sha256)
            .await
            .map_err(ApiError::internal)?
        {
            return Ok((existing, true));
        }
        let id = Uuid::now_v7().to_string();
        let now = unix_now();
        let doc = DocumentRow {
            title: if title.is_empty() {
                add.source.rsplit('/').next().unwrap_or_default().to_owned()
            } else {
                title.to_owned()
            },
            content_type: content_type.to_owned(),
            source: add.source.to_owned(),
            size_bytes: add.content.len() as u64,
            metadata,
            object_key: object_key(&id),
            status: "ingesting".into(),
            chunks_total: 0,
            chunks_done: 0,
            error: String::new(),
            model: String::new(),
            dimensions: 0,
            created_by: principal.subject.clone(),
            created_at: now,
            updated_at: now,
            sha256,
            id,
        };
        self.ingestion
            .objects
            .put(tenant, &doc.object_key, Bytes::from(add.content))
            .await
            .map_err(|e| {
                ApiError::unavailable("object storage cannot be reached", anyhow::anyhow!(e))
            })?;
        if !store
            .insert_document(tenant, &doc)
            .await
            .map_err(ApiError::internal)?
        {
            // The same content, added at the same moment by someone else.
            let _ = self.ingestion.objects.delete(tenant, &doc.object_key).await;
            let existing = store
                .document_by_hash(tenant, &doc.sha256)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(not_found)?;
            return Ok((existing, true));
        }
        let input = serde_json::to_value(IngestInput {
            tenant: tenant.clone(),
            document_id: doc.id.clone(),
            subject: principal.subject.clone(),
            capabilities: ForUser::of(principal).capabilities,
        })
        .map_err(ApiError::internal)?;
        self.engine
            .start(StartRequest {
                kind: INGEST.kind,
                id: &run_id(&doc.id),
                tenant,
                input: &input,
            })
            .await
            .map_err(|e| {
                ApiError::unavailable("the ingestion cannot be started", anyhow::anyhow!(e))
            })?;
        Ok((doc, false))
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> Result<DocumentRow, ApiError> {
        principal.require(Capability::MemoryRead)?;
        self.ingestion
            .store
            .document(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)
    }

    pub async fn list(
        &self,
        principal: &Principal,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<DocumentRow>, String), ApiError> {
        principal.require(Capability::MemoryRead)?;
        let limit = limit.clamp(1, 200);
        let rows = self
            .ingestion
            .store
            .list_documents(&principal.tenant, after, limit + 1)
            .await
            .map_err(ApiError::internal)?;
        Ok(page(rows, limit as usize, |d| d.id.clone()))
    }

    /// Deletes the document with its chunks, texts, vectors and original; a search
    /// right after finds nothing of it.
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        principal.require(Capability::MemoryWrite)?;
        let tenant = &principal.tenant;
        let store = &self.ingestion.store;
        let doc = store
            .document(tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)?;
        let mut tx = store.begin().await.map_err(ApiError::internal)?;
        MemoryStore::delete_document(&mut tx, store.db().kind(), tenant, id)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        // An ingestion still running stops (a batch in flight deletes its own vectors).
        if doc.status == "ingesting" {
            let _ = self.engine.cancel(tenant, &run_id(id)).await;
        }
        self.ingestion
            .vectors
            .delete_source(tenant, id)
            .await
            .map_err(vector_error)?;
        if let Err(e) = self.ingestion.objects.delete(tenant, &doc.object_key).await {
            tracing::warn!(error = %e, document = id, "a deleted document's original was left in object storage");
        }
        Ok(())
    }
}
