//! The local embedding model: all-MiniLM-L6-v2 (a 6-layer BERT, 384-dimensional
//! sentence embeddings) on the CPU with candle, as sentence-transformers runs it: the
//! token vectors mean-pooled over the real tokens (never the padding), then scaled to
//! unit length, so a dot product is the cosine.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{Tokenizer, TruncationParams};

/// The model's id, as profiles and `GET /v1/models` name it.
pub const MODEL_ID: &str = "all-minilm-l6-v2";
/// The directory `scripts/fetch-models.sh` installs it into, under the models dir.
pub const MODEL_DIR: &str = "all-MiniLM-L6-v2";
/// Its vector size.
pub const DIMENSIONS: u32 = 384;
/// The longest input it reads, in word pieces, as it was trained; longer inputs are
/// cut there (sentence-transformers does the same).
pub const MAX_TOKENS: usize = 256;

pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    /// One thread, for small passes (a question): spreading a pass of a few dozen word
    /// pieces over both cores costs more in waking and waiting than it saves (measured:
    /// a session turn's recall took 25-50 ms on two threads, 17-18 ms on one).
    single: rayon::ThreadPool,
}

/// Padded positions up to which a pass runs on one thread.
const SMALL_PASS: usize = 64;

/// Texts embedded together, and the word pieces each took.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: Vec<u64>,
}

impl SentenceEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json"))
                .with_context(|| format!("reading {}/config.json", dir.display()))?,
        )
        .context("config.json does not describe a BERT model")?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("reading {}/tokenizer.json: {e}", dir.display()))?;
        // The shipped tokenizer pads every input to 128 pieces: inputs are padded here
        // instead, each batch to its own longest, and the padding never reaches the
        // pooled vector.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow::anyhow!("the tokenizer refuses truncation: {e}"))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .with_context(|| format!("reading {}/model.safetensors", dir.display()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)?;
        let model = BertModel::load(vb, &config).context("the weights do not fit the model")?;
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "local-embeddings-small".into())
            .build()
            .context("a thread for small embedding passes")?;
        Ok(Self {
            model,
            tokenizer,
            device,
            single,
        })
    }

    /// One unit vector per text, in order. The texts are tokenized first and run in
    /// batches of similar length: a batch is padded to its longest text, so one long
    /// text among short ones would multiply the work of all of them.
    pub fn embed(&self, texts: &[&str]) -> Result<Embedded> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("the text cannot be tokenized: {e}"))?;
        let tokens: Vec<u64> = encodings.iter().map(|e| e.len() as u64).collect();
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        let mut start = 0;
        while start < order.len() {
            // As many as fit in BATCH texts and BATCH_POSITIONS padded positions.
            let mut end = start + 1;
            while end < order.len()
                && end - start < BATCH
                && encodings[order[end]].len() * (end - start + 1) <= BATCH_POSITIONS
            {
                end += 1;
            }
            let batch: Vec<&tokenizers::Encoding> =
                order[start..end].iter().map(|&i| &encodings[i]).collect();
            let width = batch.iter().map(|e| e.len()).max().unwrap_or(0);
            let done = if width * batch.len() <= SMALL_PASS {
                self.single.install(|| self.forward(&batch))?
            } else {
                self.forward(&batch)?
            };
            for (&i, vector) in order[start..end].iter().zip(done) {
                vectors[i] = vector;
            }
            start = end;
        }
        Ok(Embedded { vectors, tokens })
    }

    /// One forward pass over `batch`, padded to its longest.
    fn forward(&self, batch: &[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>> {
        let width = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; batch.len() * width];
        let mut mask = vec![0u32; batch.len() * width];
        for (row, encoding) in batch.iter().enumerate() {
            let at = row * width;
            ids[at..at + encoding.len()].copy_from_slice(encoding.get_ids());
            mask[at..at + encoding.len()].copy_from_slice(encoding.get_attention_mask());
        }
        let shape = (batch.len(), width);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        // Mean over the real tokens: padded positions are multiplied by 0.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

/// Texts per forward pass at most: the measured sweet spot on two cores.
const BATCH: usize = 32;
/// Padded positions per forward pass at most (texts times the longest's length), so a
/// batch of long texts is smaller.
const BATCH_POSITIONS: usize = 2048;

/// Where the model is looked for when no directory is configured.
pub fn default_locations(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut places = vec![data_dir.join("models").join(MODEL_DIR)];
    if let Some(home) = std::env::home_dir() {
        places.push(home.join(".cache/somagent/models").join(MODEL_DIR));
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed() -> Option<std::path::PathBuf> {
        default_locations(Path::new("/nonexistent"))
            .into_iter()
            .find(|p| p.join("model.safetensors").is_file())
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn related_sentences_are_closer_than_unrelated_ones_and_padding_changes_nothing() {
        let Some(dir) = installed() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: the embedding model must be installed (scripts/fetch-models.sh)"
            );
            return;
        };
        let model = SentenceEmbedder::load(&dir).unwrap();
        let texts = [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome, a story of friendship told over thirty years.",
        ];
        let all = model.embed(&texts).unwrap();
        assert_eq!(all.vectors.len(), 3);
        assert!(all.vectors.iter().all(|v| v.len() == DIMENSIONS as usize));
        let norm = dot(&all.vectors[0], &all.vectors[0]);
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        let related = dot(&all.vectors[0], &all.vectors[1]);
        let unrelated = dot(&all.vectors[0], &all.vectors[2]);
        assert!(
            related > 0.5 && unrelated < 0.2,
            "related {related}, unrelated {unrelated}"
        );
        // The short sentence was padded to the long one's length in the batch; alone it
        // has no padding. Its vector is the same either way.
        let alone = model.embed(&texts[..1]).unwrap();
        let same = dot(&alone.vectors[0], &all.vectors[0]);
        assert!(same > 0.9999, "padding moved the vector: cosine {same}");
        assert_eq!(alone.tokens[0], all.tokens[0]);
        assert!(all.tokens[2] > all.tokens[0]);
    }
}
