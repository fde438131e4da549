//! `[memory]` in the configuration file, `SOMAGENT_MEMORY__<KEY>` in the environment:
//!
//! - `embedding_profile`: the slm profile memory embeds with (`embeddings`, the
//!   platform's embedding profile, unless set).
//! - `chunk_tokens`, `chunk_overlap`: how documents are cut (160 and 24, sized for
//!   all-MiniLM-L6-v2's 256 word pieces; raise both for a model that reads more).
//! - `max_document_bytes`: the largest document accepted (20 MiB).
//!
//! Where the vectors live is `SOMAGENT_VECTORS_URL`, shared with the other backends'
//! settings.

use serde::Deserialize;

use crate::domain::chunking::ChunkRules;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    pub embedding_profile: String,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub max_document_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        let rules = ChunkRules::default();
        Self {
            embedding_profile: "embeddings".into(),
            chunk_tokens: rules.max_tokens,
            chunk_overlap: rules.overlap_tokens,
            max_document_bytes: 20 * 1024 * 1024,
        }
    }
}

impl MemoryConfig {
    pub fn rules(&self) -> anyhow::Result<ChunkRules> {
        anyhow::ensure!(
            (16..=8192).contains(&self.chunk_tokens),
            "memory.chunk_tokens must be between 16 and 8192"
        );
        anyhow::ensure!(
            self.chunk_overlap < self.chunk_tokens / 2,
            "memory.chunk_overlap must be under half of memory.chunk_tokens"
        );
        Ok(ChunkRules {
            max_tokens: self.chunk_tokens,
            overlap_tokens: self.chunk_overlap,
        })
    }
}
