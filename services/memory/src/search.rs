//! Hybrid search: the query's vector against the tenant's vectors (by meaning) and its
//! words against the full-text index (exact names and ids), both filtered the same
//! way, fused by reciprocal rank. Every hit is read back from the rows, so nothing
//! deleted, expired or half-ingested is ever returned, and each comes with what to
//! cite it by.

use std::collections::HashMap;

use serde_json::{Map, Value};
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::ApiError;

use crate::domain::fusion;
use crate::domain::scope::Scope;
use crate::embedder::{Embedder, ForUser};
use crate::memories::{scope, vector_error};
use crate::store::{ChunkRow, DocumentRow, MemoryRow, MemoryStore, query_words};
use crate::vectors::{Filter, Kind, OwnerMatch, Payload, Vectors};

/// The most hits a search returns.
pub const MAX_TOP_K: u32 = 100;
/// Candidates each search brings per hit asked for, before fusion.
const CANDIDATES: usize = 4;
/// The owner kind of a document's chunks (no memory has it).
pub const DOCUMENT_OWNER: &str = "document";

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub text: String,
    pub vector: Vec<f32>,
    pub scopes: Vec<String>,
    pub kinds: Vec<String>,
    pub filter_json: String,
    pub top_k: u32,
    pub min_score: Option<f32>,
    pub session_id: String,
}

/// A memory or a passage found.
#[derive(Debug, Clone)]
pub enum Found {
    Memory(MemoryRow),
    Chunk(ChunkRow, DocumentRow),
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub found: Found,
    pub score: f64,
    pub similarity: Option<f32>,
}

#[derive(Clone)]
pub struct Searcher {
    pub store: MemoryStore,
    pub vectors: Vectors,
    pub embedder: Embedder,
}

/// The metadata filter: an object of strings, numbers and booleans.
fn metadata_filter(raw: &str) -> Result<Map<String, Value>, ApiError> {
    let map = crate::memories::metadata(raw).map_err(|_| {
        ApiError::validation(
            "filter",
            "is a JSON object of metadata fields and the values they must have",
        )
    })?;
    if let Some((key, _)) = map
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_boolean() || v.as_i64().is_some()))
    {
        return Err(ApiError::validation(
            "filter",
            format!("`{key}` must be a string, an integer or a boolean"),
        ));
    }
    Ok(map)
}

fn payload_of(found: &Found) -> Payload {
    match found {
        Found::Memory(m) => crate::memories::memory_payload(m),
        Found::Chunk(c, d) => chunk_payload(c, d),
    }
}

/// The vector backend's payload for a chunk of document `d`.
pub fn chunk_payload(c: &ChunkRow, d: &DocumentRow) -> Payload {
    Payload {
        kind: Kind::Chunk,
        owner_kind: DOCUMENT_OWNER.into(),
        owner_id: String::new(),
        subject: String::new(),
        source: d.id.clone(),
        position: c.position,
        metadata: d.metadata.clone(),
    }
}

impl Searcher {
    /// The filter a caller's query means: their scopes' memories (theirs, or the
    /// tenant's shared ones) and the tenant's documents.
    fn filter(&self, principal: &Principal, q: &Query) -> Result<Filter, ApiError> {
        let kinds = q
            .kinds
            .iter()
            .map(|k| {
                Kind::parse(k)
                    .ok_or_else(|| ApiError::validation("kinds", "are `memory` and/or `chunk`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scopes: Vec<Scope> = if q.scopes.is_empty() {
            let mut defaults = vec![Scope::User, Scope::Tenant];
            if !q.session_id.is_empty() {
                defaults.push(scope(&format!("session:{}", q.session_id))?);
            }
            defaults
        } else {
            q.scopes
                .iter()
                .map(|s| scope(s))
                .collect::<Result<_, _>>()?
        };
        let mut owners: Vec<OwnerMatch> = scopes
            .iter()
            .map(|s| {
                let o = s.owner(&principal.subject);
                OwnerMatch {
                    kind: o.kind.into(),
                    id: o.id,
                    subject: o.subject,
                }
            })
            .collect();
        if kinds.is_empty() || kinds.contains(&Kind::Chunk) {
            owners.push(OwnerMatch {
                kind: DOCUMENT_OWNER.into(),
                id: String::new(),
                subject: String::new(),
            });
        }
        Ok(Filter {
            kinds,
            owners,
            metadata: metadata_filter(&q.filter_json)?,
        })
    }

    /// The hits for `q`, best first, and the embedding model searched.
    pub async fn search(
        &self,
        principal: &Principal,
        q: Query,
    ) -> Result<(Vec<Hit>, String), ApiError> {
        principal.require(Capability::MemoryRead)?;
        let top_k = match q.top_k {
            0 => 10,
            k if k <= MAX_TOP_K => k,
            _ => {
                return Err(ApiError::validation(
                    "top_k",
                    format!("is at most {MAX_TOP_K}"),
                ));
            }
        } as usize;
        if let Some(min) = q.min_score
            && !(-1.0..=1.0).contains(&min)
        {
            return Err(ApiError::validation(
                "min_score",
                "is a cosine similarity, between -1 and 1",
            ));
        }
        if q.text.trim().is_empty() == q.vector.is_empty() {
            return Err(ApiError::validation(
                "query",
                "give the query's text or its vector (one of them)",
            ));
        }
        let filter = self.filter(principal, &q)?;
        let user = ForUser::of(principal);
        let tenant = &principal.tenant;
        // A question asked where nothing is stored is not embedded (that is most of a
        // session turn's time). A vector asked for is still checked against the model.
        if q.vector.is_empty()
            && !self
                .store
                .may_hold(tenant, &filter, unix_now())
                .await
                .map_err(ApiError::internal)?
        {
            return Ok((Vec::new(), self.embedder.collection(&user).await?.model));
        }
        let wanted = top_k * CANDIDATES;
        // The words are searched while the question is embedded: a turn waits for the
        // slower of the two, not for both.
        let by_meaning = async {
            let (collection, vector) = if q.vector.is_empty() {
                let (collection, mut vectors) =
                    self.embedder.embed(&user, vec![q.text.clone()]).await?;
                (collection, vectors.pop().unwrap_or_default())
            } else {
                (self.embedder.collection(&user).await?, q.vector.clone())
            };
            let hits: Vec<_> = self
                .vectors
                .search(tenant, &collection, vector, &filter, wanted)
                .await
                .map_err(vector_error)?
                .into_iter()
                .filter(|h| q.min_score.is_none_or(|min| h.score >= min))
                .collect();
            Ok((collection, hits))
        };
        let by_words = async {
            self.store
                .text_search(
                    tenant,
                    &query_words(&q.text),
                    &filter.kinds,
                    wanted as u32 * 2,
                )
                .await
                .map_err(ApiError::internal)
        };
        let ((collection, by_meaning), by_words) = tokio::try_join!(by_meaning, by_words)?;

        // Everything found, read back from the rows.
        let ids: Vec<String> = by_meaning
            .iter()
            .map(|h| h.id.to_string())
            .chain(by_words.iter().map(|(id, _)| id.clone()))
            .collect();
        let (memory_ids, chunk_ids): (Vec<String>, Vec<String>) = {
            let word_kinds: HashMap<&str, Kind> =
                by_words.iter().map(|(id, k)| (id.as_str(), *k)).collect();
            // A vector hit's kind is not known until its row is read: ask both.
            let mut memories = Vec::new();
            let mut chunks = Vec::new();
            for id in &ids {
                match word_kinds.get(id.as_str()) {
                    Some(Kind::Memory) => memories.push(id.clone()),
                    Some(Kind::Chunk) => chunks.push(id.clone()),
                    None => {
                        memories.push(id.clone());
                        chunks.push(id.clone());
                    }
                }
            }
            (memories, chunks)
        };
        let now = unix_now();
        let mut rows: HashMap<String, Found> = HashMap::new();
        for m in self
            .store
            .memories_by_ids(tenant, &memory_ids, now)
            .await
            .map_err(ApiError::internal)?
        {
            rows.insert(m.id.clone(), Found::Memory(m));
        }
        for (c, d) in self
            .store
            .chunks_by_ids(tenant, &chunk_ids)
            .await
            .map_err(ApiError::internal)?
        {
            rows.insert(c.id.clone(), Found::Chunk(c, d));
        }
        let allowed = |id: &String| rows.get(id).is_some_and(|f| filter.matches(&payload_of(f)));
        let similarity: HashMap<String, f32> = by_meaning
            .iter()
            .map(|h| (h.id.to_string(), h.score))
            .collect();
        let meaning: Vec<String> = by_meaning
            .iter()
            .map(|h| h.id.to_string())
            .filter(allowed)
            .collect();
        let words: Vec<String> = by_words
            .into_iter()
            .map(|(id, _)| id)
            .filter(allowed)
            .collect();
        let fused = fusion::fuse(&[meaning, words]);
        Ok((
            fused
                .into_iter()
                .take(top_k)
                .filter_map(|(id, score)| {
                    Some(Hit {
                        similarity: similarity.get(&id).copied(),
                        found: rows.remove(&id)?,
                        score,
                    })
                })
                .collect(),
            collection.model,
        ))
    }
}
