//! Where the vectors live, behind one contract: the platform's own store with an
//! in-process exact index (`local://`, for `somagent up`), or a Qdrant server
//! (`qdrant://host:6334`). Every call names its tenant, and nothing of another tenant's
//! is ever read, scored or deleted. A collection holds one embedding model's vectors
//! (their size is the model's), so vectors of different models are never compared.
//!
//! Vectors are stored scaled to unit length and scored by cosine (a dot product of
//! unit vectors), on both backends.

mod embedded;
mod qdrant;

use serde_json::{Map, Value};
use somagent_common::tenant::TenantId;
use uuid::Uuid;

pub use embedded::EmbeddedVectors;
pub use qdrant::QdrantVectors;

/// One embedding model's vectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collection {
    /// The model's id, as slm names it.
    pub model: String,
    pub dimensions: u32,
}

impl Collection {
    /// A name both backends accept, unique per model and size.
    pub fn name(&self) -> String {
        let model: String = self
            .model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("somagent_{model}_{}", self.dimensions)
    }
}

/// What a vector stands for: a memory, or a chunk of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Memory,
    Chunk,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Chunk => "chunk",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "memory" => Some(Self::Memory),
            "chunk" => Some(Self::Chunk),
            _ => None,
        }
    }
}

/// What a search can filter a vector by, kept beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub kind: Kind,
    /// The owner of a memory (`user`, `session`, `agent`, `tenant`); `tenant` for a
    /// document's chunks.
    pub owner_kind: String,
    pub owner_id: String,
    pub subject: String,
    /// The memory's or document's id: what deleting it deletes by.
    pub source: String,
    /// A chunk's place in its document; 0 for a memory.
    pub position: u32,
    /// The memory's or document's metadata, for equality filters.
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// An owner a search may match: its kind, id and user, each as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerMatch {
    pub kind: String,
    pub id: String,
    pub subject: String,
}

/// What a vector must be to be found. Empty lists match everything of that part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub kinds: Vec<Kind>,
    /// Any of these owners.
    pub owners: Vec<OwnerMatch>,
    /// Metadata fields that must equal these values (strings, numbers, booleans).
    pub metadata: Map<String, Value>,
}

impl Filter {
    pub fn matches(&self, p: &Payload) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&p.kind))
            && (self.owners.is_empty()
                || self.owners.iter().any(|o| {
                    o.kind == p.owner_kind && o.id == p.owner_id && o.subject == p.subject
                }))
            && self
                .metadata
                .iter()
                .all(|(k, v)| p.metadata.get(k) == Some(v))
    }
}

/// A vector found, by its cosine to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("a vector of {got} numbers where the collection holds {expected}")]
    WrongSize { expected: u32, got: usize },
    #[error("a vector that is not all finite numbers, or all zeros")]
    NotANumber,
    #[error("vectors: {0}")]
    Backend(String),
}

/// Scales `vector` to unit length in place; a zero or non-finite vector is refused.
pub fn normalize(vector: &mut [f32]) -> Result<(), VectorError> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(VectorError::NotANumber);
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    Ok(())
}

fn check_size(collection: &Collection, vector: &[f32]) -> Result<(), VectorError> {
    if vector.len() != collection.dimensions as usize {
        return Err(VectorError::WrongSize {
            expected: collection.dimensions,
            got: vector.len(),
        });
    }
    Ok(())
}

/// The configured backend.
#[derive(Clone)]
pub enum Vectors {
    Embedded(EmbeddedVectors),
    Qdrant(QdrantVectors),
}

impl Vectors {
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "local",
            Self::Qdrant(_) => "qdrant",
        }
    }

    /// Stores `points` (replacing those of the same ids), each checked against the
    /// collection's size and scaled to unit length.
    pub async fn upsert(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        mut points: Vec<Point>,
    ) -> Result<(), VectorError> {
        for p in &mut points {
            check_size(collection, &p.vector)?;
            normalize(&mut p.vector)?;
        }
        match self {
            Self::Embedded(v) => v.upsert(tenant, collection, points).await,
            Self::Qdrant(v) => v.upsert(tenant, collection, points).await,
        }
    }

    pub async fn delete(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        ids: &[Uuid],
    ) -> Result<(), VectorError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self {
            Self::Embedded(v) => v.delete(tenant, collection, ids).await,
            Self::Qdrant(v) => v.delete(tenant, collection, ids).await,
        }
    }

    /// Deletes every vector of the memory or document `source`, in every collection.
    pub async fn delete_source(&self, tenant: &TenantId, source: &str) -> Result<(), VectorError> {
        match self {
            Self::Embedded(v) => v.delete_source(tenant, source).await,
            Self::Qdrant(v) => v.delete_source(tenant, source).await,
        }
    }

    /// The `limit` vectors of the tenant's collection closest to `query` that `filter`
    /// lets through, best first.
    pub async fn search(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        mut query: Vec<f32>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        check_size(collection, &query)?;
        normalize(&mut query)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        match self {
            Self::Embedded(v) => v.search(tenant, collection, &query, filter, limit).await,
            Self::Qdrant(v) => v.search(tenant, collection, query, filter, limit).await,
        }
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), VectorError> {
        match self {
            Self::Embedded(_) => Ok(()),
            Self::Qdrant(v) => v.ping().await,
        }
    }
}

impl somagent_common::readiness::Probe for Vectors {
    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
