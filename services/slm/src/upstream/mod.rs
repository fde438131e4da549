//! The servers models run on, behind one shape: a chat call in, a stream of deltas out.
//!
//! - `openai`: any OpenAI-compatible server, through `async-openai`.
//! - `local`: SmolLM2 in this process, through `candle`.
//! - `local-embeddings`: all-MiniLM-L6-v2 in this process, through `candle`.

pub mod in_process;
pub mod local_embeddings;
pub mod metrics;
pub mod openai;

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::Stream;

use crate::domain::chat::{ChatCall, Delta};
use crate::domain::embedding::Embeddings;

pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta, UpstreamError>> + Send>>;

/// Why a call failed, and whether trying again (or the next profile) may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: FailureKind,
    /// The upstream's HTTP status, if it answered with one.
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Overloaded, rate-limited, restarting or unreachable: worth another try.
    Transient,
    /// No answer in time.
    Timeout,
    /// The request itself was refused (400, 401, 404 ...): another try would be too.
    Rejected,
    /// Busy here (the local model's queue is full).
    Busy,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Timeout => "timeout",
            FailureKind::Rejected => "rejected",
            FailureKind::Busy => "busy",
        }
    }
}

impl UpstreamError {
    pub fn new(kind: FailureKind, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }

    /// Worth trying again or falling back.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Transient | FailureKind::Timeout | FailureKind::Busy
        )
    }
}

pub enum Upstream {
    OpenAi(openai::OpenAiUpstream),
    Local(in_process::LocalUpstream),
    LocalEmbeddings(local_embeddings::LocalEmbedder),
}

impl Upstream {
    pub async fn stream(&self, call: ChatCall) -> Result<DeltaStream, UpstreamError> {
        match self {
            Self::OpenAi(u) => u.stream(call).await,
            Self::Local(u) => u.stream(call).await,
            Self::LocalEmbeddings(_) => Err(UpstreamError::new(
                FailureKind::Rejected,
                Some(400),
                "this is an embedding model; it does not chat",
            )),
        }
    }

    pub async fn embed(
        &self,
        model: &str,
        texts: Vec<String>,
        dimensions: Option<u32>,
    ) -> Result<Embeddings, UpstreamError> {
        match self {
            Self::OpenAi(u) => u.embed(model, texts, dimensions).await,
            Self::LocalEmbeddings(u) => u.embed(texts).await,
            Self::Local(_) => Err(UpstreamError::new(
                FailureKind::Rejected,
                Some(400),
                "this is a chat model; it does not embed",
            )),
        }
    }
}

/// The configured upstreams by name.
#[derive(Default)]
pub struct Upstreams {
    by_name: BTreeMap<String, Upstream>,
}

impl Upstreams {
    pub fn insert(&mut self, name: impl Into<String>, upstream: Upstream) {
        self.by_name.insert(name.into(), upstream);
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
