//! The local model as an upstream: SmolLM2 runs on its own thread (generation is CPU
//! work that must not block the async runtime), loaded on the first call so a platform
//! that never uses it never pays for it. Calls queue; a full queue is "busy". A call
//! with a JSON `response_format` gets an answer of that shape (`domain::json_shape`).

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{DeltaStream, FailureKind, UpstreamError};
use crate::domain::chat::{ChatCall, Delta, FinishReason, TokenUsage};
use crate::domain::json_shape::Shape;
use crate::gguf_model::{self, LocalModel};

/// Calls waiting for the model beyond the one it is answering.
const QUEUE: usize = 16;
/// The most a local answer runs to when the caller sets no limit.
const DEFAULT_MAX_TOKENS: u32 = 256;
/// The same for an answer of a JSON shape, which must reach its closing brace.
const DEFAULT_MAX_SHAPED_TOKENS: u32 = 1024;

struct Job {
    call: ChatCall,
    out: mpsc::Sender<Result<Delta, UpstreamError>>,
}

pub struct LocalUpstream {
    path: PathBuf,
    requantize_q8: bool,
    /// Started on first use.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl LocalUpstream {
    /// `requantize_q8`: run the model as Q8_0, about three times faster than the
    /// shipped Q4_1, for more memory.
    pub fn new(path: PathBuf, requantize_q8: bool) -> Self {
        Self {
            path,
            requantize_q8,
            jobs: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::Sender<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = jobs.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let path = self.path.clone();
        let requantize = self.requantize_q8;
        std::thread::Builder::new()
            .name("local-model".into())
            .spawn(move || serve(path, requantize, rx))
            .expect("a thread for the local model starts");
        *jobs = Some(tx.clone());
        tx
    }

    pub async fn stream(&self, call: ChatCall) -> Result<DeltaStream, UpstreamError> {
        let (out, rx) = mpsc::channel(64);
        self.sender()
            .try_send(Job { call, out })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => UpstreamError::new(
                    FailureKind::Busy,
                    None,
                    "the local model is busy; try again shortly",
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    UpstreamError::new(FailureKind::Transient, None, "the local model stopped")
                }
            })?;
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
    }
}

/// The model's thread: loads it, then answers one job at a time.
fn serve(path: PathBuf, requantize: bool, mut jobs: mpsc::Receiver<Job>) {
    let started = std::time::Instant::now();
    let mut model = match LocalModel::load(&path, requantize) {
        Ok(model) => {
            tracing::info!(path = %path.display(), seconds = started.elapsed().as_secs_f32(), "local model loaded");
            model
        }
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "the local model cannot be loaded");
            while let Some(job) = jobs.blocking_recv() {
                let _ = job.out.blocking_send(Err(UpstreamError::new(
                    FailureKind::Transient,
                    None,
                    "the local model cannot be loaded",
                )));
            }
            return;
        }
    };
    while let Some(job) = jobs.blocking_recv() {
        answer(&mut model, job);
    }
}

fn answer(model: &mut LocalModel, job: Job) {
    let Job { call, out } = job;
    let failed = |message: String| {
        Err(UpstreamError::new(
            FailureKind::Rejected,
            Some(400),
            message,
        ))
    };
    let prompt = match model.encode_chat(&call.messages) {
        Ok(ids) => ids,
        Err(e) => {
            let _ = out.blocking_send(failed(format!("the prompt cannot be encoded: {e}")));
            return;
        }
    };
    let shape = call
        .response_format
        .as_ref()
        .and_then(Shape::for_response_format);
    let default_max = if shape.is_some() {
        DEFAULT_MAX_SHAPED_TOKENS
    } else {
        DEFAULT_MAX_TOKENS
    };
    let max_tokens = call.max_tokens.unwrap_or(default_max) as usize;
    let temperature = f64::from(call.temperature.unwrap_or(0.0));
    let seed = call.seed.unwrap_or(299_792_458);
    let mut text = String::new();
    let mut sent = 0;
    let mut stopped = false;
    let result = model.generate(
        &prompt,
        max_tokens,
        temperature,
        seed,
        shape.as_ref(),
        |piece| {
            text.push_str(piece);
            // A stop sequence ends the answer before it.
            let mut end = text.len();
            if let Some(at) = call.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                end = at;
                stopped = true;
            }
            if end > sent {
                if out
                    .blocking_send(Ok(Delta::Text(text[sent..end].to_owned())))
                    .is_err()
                {
                    return false;
                }
                sent = end;
            }
            !stopped
        },
    );
    let finish = match result {
        Ok((prompt_tokens, completion_tokens, reason)) => Ok(Delta::Finish {
            reason: match reason {
                gguf_model::FinishReason::Length if !stopped => FinishReason::Length,
                _ => FinishReason::Stop,
            },
            usage: Some(TokenUsage {
                prompt: prompt_tokens as u64,
                completion: completion_tokens as u64,
            }),
        }),
        Err(e) => failed(format!("the local model failed: {e}")),
    };
    let _ = out.blocking_send(finish);
}
