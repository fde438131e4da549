//! The local embedding model as an upstream: MiniLM runs on its own thread (a forward
//! pass is CPU work that must not block the async runtime), loaded on the first call.
//! Calls that arrive while it works are taken together: their texts go through the
//! model in batches of similar length (less padding), and each call gets its vectors
//! back in its own order.

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use super::{FailureKind, UpstreamError};
use crate::domain::embedding::Embeddings;
use crate::minilm::SentenceEmbedder;

/// Calls waiting beyond those being embedded.
const QUEUE: usize = 64;
/// Texts per forward pass: the measured sweet spot on two cores (3.4 ms a text at 32,
/// 11 ms alone).
const BATCH: usize = 32;
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
    // Every text of the round, by length, so each batch pads little.
    let mut order: Vec<(usize, usize)> = round
        .iter()
        .enumerate()
        .flat_map(|(job, j)| (0..j.texts.len()).map(move |text| (job, text)))
        .collect();
    order.sort_by_key(|&(job, text)| round[job].texts[text].len());
    let mut vectors: Vec<Vec<Option<Vec<f32>>>> =
        round.iter().map(|j| vec![None; j.texts.len()]).collect();
    let mut tokens = vec![0u64; round.len()];
    let mut failed = vec![None; round.len()];
    for batch in order.chunks(BATCH) {
        let texts: Vec<&str> = batch
            .iter()
            .map(|&(job, text)| round[job].texts[text].as_str())
            .collect();
        match model.embed(&texts) {
            Ok(done) => {
                for ((&(job, text), vector), used) in
                    batch.iter().zip(done.vectors).zip(done.tokens)
                {
                    vectors[job][text] = Some(vector);
                    tokens[job] += used;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the local embedding model failed a batch");
                for &(job, _) in batch {
                    failed[job] = Some(e.to_string());
                }
            }
        }
    }
    for (i, job) in round.into_iter().enumerate() {
        let result = match failed[i].take() {
            Some(why) => Err(UpstreamError::new(
                FailureKind::Transient,
                None,
                format!("the local embedding model failed: {why}"),
            )),
            None => Ok(Embeddings {
                vectors: std::mem::take(&mut vectors[i])
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
                prompt_tokens: tokens[i],
            }),
        };
        let _ = job.reply.send(result);
    }
}
