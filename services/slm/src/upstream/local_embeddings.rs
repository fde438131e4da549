//! The local embedding model as an upstream: MiniLM runs on its own thread (a forward
//! pass is CPU work that must not block the async runtime), loaded on the first call.
//! Calls that arrive while it works are taken together: their texts go through the
//! model together (which runs them in batches of similar length), and each call gets
//! its vectors back in its own order.

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use super::{FailureKind, UpstreamError};
use crate::domain::embedding::Embeddings;
use crate::minilm::SentenceEmbedder;

/// Calls waiting beyond those being embedded.
const QUEUE: usize = 64;
/// Texts gathered from waiting calls before a round starts.
const ROUND: usize = 256;

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embeddings, UpstreamError>>,
}

pub struct LocalEmbedder {
    dir: PathBuf,
    /// Started on first use.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl LocalEmbedder {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            jobs: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::Sender<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = jobs.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let dir = self.dir.clone();
        std::thread::Builder::new()
            .name("local-embeddings".into())
            .spawn(move || serve(dir, rx))
            .expect("a thread for the local embedding model starts");
        *jobs = Some(tx.clone());
        tx
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, UpstreamError> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .try_send(Job { texts, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => UpstreamError::new(
                    FailureKind::Busy,
                    None,
                    "the local embedding model is busy; try again shortly",
                ),
                mpsc::error::TrySendError::Closed(_) => UpstreamError::new(
                    FailureKind::Transient,
                    None,
                    "the local embedding model stopped",
                ),
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(UpstreamError::new(
                FailureKind::Transient,
                None,
                "the local embedding model stopped",
            ))
        })
    }
}

/// The model's thread: loads it, then embeds what waits, round after round.
fn serve(dir: PathBuf, mut jobs: mpsc::Receiver<Job>) {
    let started = std::time::Instant::now();
    let model = match SentenceEmbedder::load(&dir) {
        Ok(model) => {
            tracing::info!(path = %dir.display(), seconds = started.elapsed().as_secs_f32(), "local embedding model loaded");
            model
        }
        Err(e) => {
            tracing::error!(error = %e, path = %dir.display(), "the local embedding model cannot be loaded");
            while let Some(job) = jobs.blocking_recv() {
                let _ = job.reply.send(Err(UpstreamError::new(
                    FailureKind::Transient,
                    None,
                    "the local embedding model cannot be loaded",
                )));
            }
            return;
        }
    };
    while let Some(first) = jobs.blocking_recv() {
        let mut round = vec![first];
        let mut texts = round[0].texts.len();
        while texts < ROUND {
            let Ok(job) = jobs.try_recv() else { break };
            texts += job.texts.len();
            round.push(job);
        }
        answer_round(&model, round);
    }
}

fn answer_round(model: &SentenceEmbedder, round: Vec<Job>) {
    // Every text of the round in one call: the model batches them by length.
    let texts: Vec<&str> = round
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    let done = model.embed(&texts);
    let mut at = 0;
    for job in round {
        let n = job.texts.len();
        let result = match &done {
            Ok(done) => Ok(Embeddings {
                vectors: done.vectors[at..at + n].to_vec(),
                prompt_tokens: done.tokens[at..at + n].iter().sum(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "the local embedding model failed");
                Err(UpstreamError::new(
                    FailureKind::Transient,
                    None,
                    format!("the local embedding model failed: {e}"),
                ))
            }
        };
        at += n;
        let _ = job.reply.send(result);
    }
}
