//! The memory service: what agents remember and what a tenant's documents say.
//!
//! Layout:
//! - `domain/`: scopes, text extraction, chunking, rank fusion; no I/O.
//! - `vectors/`: the vector backends behind one contract (the platform's own store
//!   with an exact in-process index, or Qdrant).
//! - `store`: memories, documents, chunks and the full-text index.
//! - `embedder`: texts into vectors through slm, for the user they are for.
//! - `memories`, `search`, `documents`: the use cases (documents are ingested by a
//!   durable workflow).
//! - `api/grpc`: the `somagent.memory.v1` service the gateway and the orchestrator
//!   call.

mod api;
pub mod config;
mod documents;
pub mod domain;
mod embedder;
mod memories;
mod search;
mod store;
pub mod vectors;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::proto::memory::v1::memory_service_server::MemoryServiceServer;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::service::SLM;
use somagent_workflows::local::LocalEngine;
use somagent_workflows::store::RunStore;
use somagent_workflows::temporal::TemporalEngine;
use somagent_workflows::{Engine, Registry};

pub use somagent_common::service::MEMORY as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// The full-text index, for the contract suite (not an API).
#[doc(hidden)]
pub mod store_for_tests {
    use somagent_common::infra::db::Db;
    use somagent_common::tenant::TenantId;

    use crate::store::{MemoryStore, query_words};
    use crate::vectors::Kind;

    pub async fn index(db: &Db, tenant: &TenantId, item: &str, text: &str) {
        let mut tx = db.begin().await.unwrap();
        MemoryStore::index(&mut tx, db.kind(), tenant, item, Kind::Chunk, text)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// How SQLite runs the full-text query: one line per step of its plan.
    pub async fn sqlite_search_plan(db: &Db) -> Vec<String> {
        use sqlx::Row;
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            crate::store::sqlite_text_query(2, 10)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind("\"word\"")
            .bind("acme")
            .bind("memory")
            .bind("chunk")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect()
    }

    /// Stores a memory of the owner `(kind, id, subject)` that lives until `expires_at`.
    pub async fn put_memory(
        db: &Db,
        tenant: &TenantId,
        (kind, id, subject): (&str, &str, &str),
        expires_at: Option<i64>,
    ) {
        let owner = crate::store::OwnerRow {
            kind: kind.to_owned(),
            id: id.to_owned(),
            subject: subject.to_owned(),
        };
        let row = crate::store::MemoryRow {
            id: uuid::Uuid::new_v4().to_string(),
            owner,
            key: "k".into(),
            text: "remembered".into(),
            metadata: Default::default(),
            model: "m".into(),
            dimensions: 3,
            created_at: 1,
            updated_at: 1,
            expires_at,
        };
        let mut tx = db.begin().await.unwrap();
        MemoryStore::put_memory(&mut tx, tenant, &row)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Stores one chunk of the document `document`.
    pub async fn put_chunk(db: &Db, tenant: &TenantId, document: &str) {
        let chunk = crate::store::ChunkRow {
            id: uuid::Uuid::new_v4().to_string(),
            document_id: document.to_owned(),
            position: 0,
            section: String::new(),
            text: "a passage".into(),
            start: 0,
            end: 9,
        };
        let mut tx = db.begin().await.unwrap();
        MemoryStore::put_chunks(&mut tx, tenant, &[chunk])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Whether a search of these owners (`document` for chunks) and kinds may find
    /// anything at time `now`.
    pub async fn may_hold(
        db: &Db,
        tenant: &TenantId,
        owners: &[(&str, &str, &str)],
        kinds: &[Kind],
        now: i64,
    ) -> bool {
        let filter = crate::vectors::Filter {
            kinds: kinds.to_vec(),
            owners: owners
                .iter()
                .map(|(kind, id, subject)| crate::vectors::OwnerMatch {
                    kind: (*kind).to_owned(),
                    id: (*id).to_owned(),
                    subject: (*subject).to_owned(),
                })
                .collect(),
            metadata: Default::default(),
        };
        MemoryStore::new(db.clone())
            .may_hold(tenant, &filter, now)
            .await
            .unwrap()
    }

    pub async fn search(db: &Db, tenant: &TenantId, query: &str) -> Vec<String> {
        MemoryStore::new(db.clone())
            .text_search(tenant, &query_words(query), &[], 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }
}

/// How often expired memories are swept away.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The vector backend `SOMAGENT_VECTORS_URL` names, over `db` for the embedded one.
pub fn vectors_for(
    url: &somagent_common::config::VectorsUrl,
    db: somagent_common::infra::db::Db,
) -> anyhow::Result<vectors::Vectors> {
    Ok(match url.qdrant() {
        Some(target) => vectors::Vectors::Qdrant(
            vectors::QdrantVectors::connect(&target.address, target.api_key, &target.prefix)
                .with_context(|| format!("vectors_url {url}"))?,
        ),
        None => vectors::Vectors::Embedded(vectors::EmbeddedVectors::new(db)),
    })
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::MemoryConfig = ctx.settings()?;
    let rules = settings.rules()?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("memory needs its database")?.clone();
    let shared = &builder.context().backends;
    let cache = shared.cache.clone().context("memory needs the cache")?;
    let objects = shared
        .objects
        .clone()
        .context("memory needs object storage")?;
    let vectors = vectors_for(&config.vectors_url, db.clone())?;
    tracing::info!(backend = vectors.engine(), "vectors");
    let store = store::MemoryStore::new(db.clone());
    let embedder = embedder::Embedder::new(
        SlmServiceClient::new(config.channel(&SLM, Some(Duration::from_secs(120)))?),
        ServiceTokens::connect(&config, &SPEC)?,
        settings.embedding_profile.clone(),
    );
    let ingestion = documents::Ingestion {
        store: store.clone(),
        vectors: vectors.clone(),
        embedder: embedder.clone(),
        objects,
        rules,
    };
    let mut registry = Registry::new();
    registry.observed_by(somagent_workflows::ActivityMetrics::register(
        builder.metrics(),
    ));
    documents::register(&mut registry, ingestion.clone());
    db.migrate("workflows", somagent_workflows::MIGRATIONS)
        .await?;
    let engine: Arc<dyn Engine> = match config.workflows_url.temporal() {
        Some(mut target) => {
            // Memory's workflows on a task queue of their own: the orchestrator's
            // workers know none of them.
            target.task_queue = format!("{}-memory", target.task_queue);
            let identity = format!("{}@{}", SPEC.name, std::process::id());
            Arc::new(TemporalEngine::start(&target, &identity, registry, RunStore::new(db)).await?)
        }
        None => {
            let engine = LocalEngine::new(db, registry);
            engine.keep_resuming();
            Arc::new(engine)
        }
    };
    let memories = memories::Memories {
        store: store.clone(),
        vectors: vectors.clone(),
        embedder: embedder.clone(),
    };
    let sweeper = memories.clone();
    let stopping = builder.stopping();
    builder.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = every.tick() => {
                    match sweeper.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(memories = n, "expired memories removed"),
                        Err(e) => tracing::warn!(error = %e.message, "expired memories could not be removed"),
                    }
                }
            }
        }
    });
    let grpc = api::grpc::MemoryGrpc {
        memories,
        searcher: search::Searcher {
            store,
            vectors: vectors.clone(),
            embedder,
        },
        library: documents::Library {
            ingestion,
            engine: engine.clone(),
            max_bytes: settings.max_document_bytes,
        },
    };
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    // A document comes in one message: room for the largest accepted, and its framing.
    let service = MemoryServiceServer::new(grpc)
        .max_decoding_message_size(settings.max_document_bytes + 64 * 1024);
    let probe = somagent_workflows::EngineProbe(engine.clone());
    let stopping = engine;
    Ok(builder
        .ready_when("vectors", vectors)
        .ready_when("workflows", probe)
        .authenticated_grpc(verifier, service)
        .on_shutdown(move || async move { stopping.shutdown().await })
        .build())
}
