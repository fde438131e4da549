//! Where the models are: the upstreams an operator configures and the local model.
//! `[slm]` in the configuration file, `SOMAGENT_SLM__<KEY>` in the environment:
//!
//! - `llm_base_url`, `llm_api_key` (or `SOMAGENT_SLM__LLM_API_KEY_FILE`), `llm_model`:
//!   the `default` upstream, any OpenAI-compatible server (OpenAI, vLLM, Ollama,
//!   llama.cpp server, Ray Serve), and its model.
//! - `llm_upstreams` (or `…_FILE`): more, as JSON `[{"name", "base_url", "api_key"?}]`
//!   (a TOML array of tables in the file), for platform profiles to name.
//! - `llm_model_path`: the local model's GGUF file (SmolLM2-135M-Instruct); by default
//!   looked for in `<data dir>/models/` and `~/.cache/somagent/models/`.
//! - `llm_local_q8`: run the local model requantized to Q8_0 (about three times faster
//!   than the shipped Q4_1, for more memory); on by default.
//! - `llm_price_prompt`, `llm_price_completion`: what the platform's `default` profile
//!   costs, in millionths of USD per 1,000 tokens (0 by default).
//! - `embedding_model`, `embedding_dimensions`, `embedding_price`: an embedding model of
//!   the `default` upstream, its vector size (required with it) and its price per
//!   1,000 tokens; it becomes the `embeddings` profile.
//! - `embedding_model_dir`: the local embedding model (all-MiniLM-L6-v2: its
//!   `config.json`, `tokenizer.json`, `model.safetensors`); by default looked for in
//!   `<data dir>/models/` and `~/.cache/somagent/models/`. The `embeddings` profile when
//!   no upstream embedding model is configured.
//!
//! Tenants never give URLs: a profile names a configured upstream, so no tenant can
//! make the platform call an address of their choosing.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use somagent_common::config::ConfigError;

/// The GGUF file `scripts/fetch-models.sh` installs.
pub const LOCAL_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The name the local model is called by.
pub const LOCAL_MODEL_ID: &str = "smollm2-135m-instruct";

#[derive(Clone, Deserialize)]
pub struct UpstreamConfig {
    pub name: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The settings as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlmSettings {
    pub llm_base_url: Option<String>,
    pub llm_api_key: Option<String>,
    pub llm_model: Option<String>,
    pub llm_upstreams: Option<UpstreamList>,
    pub llm_model_path: Option<PathBuf>,
    pub llm_local_q8: bool,
    pub llm_price_prompt: u32,
    pub llm_price_completion: u32,
    pub embedding_model: Option<String>,
    pub embedding_dimensions: Option<u32>,
    pub embedding_price: u32,
    pub embedding_model_dir: Option<PathBuf>,
}

impl Default for SlmSettings {
    fn default() -> Self {
        Self {
            llm_base_url: None,
            llm_api_key: None,
            llm_model: None,
            llm_upstreams: None,
            llm_model_path: None,
            llm_local_q8: true,
            llm_price_prompt: 0,
            llm_price_completion: 0,
            embedding_model: None,
            embedding_dimensions: None,
            embedding_price: 0,
            embedding_model_dir: None,
        }
    }
}

/// More upstreams: JSON in one string (how an environment variable or secret file
/// gives them) or a list (how the TOML file does).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UpstreamList {
    Json(String),
    List(Vec<UpstreamConfig>),
}

/// The settings checked and resolved: what the service runs with.
#[derive(Debug, Clone)]
pub struct SlmConfig {
    pub upstreams: Vec<UpstreamConfig>,
    /// The `default` upstream's model.
    pub default_model: Option<String>,
    pub local_model: Option<PathBuf>,
    pub requantize_q8: bool,
    pub default_price: crate::domain::pricing::Price,
    /// The `default` upstream's embedding model and its vector size.
    pub embedding_model: Option<(String, u32)>,
    pub embedding_price: crate::domain::pricing::Price,
    /// The local embedding model's directory.
    pub local_embeddings: Option<PathBuf>,
}

fn given(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl SlmConfig {
    pub fn resolve(settings: SlmSettings, data_dir: &Path) -> Result<Self, ConfigError> {
        let mut upstreams = Vec::new();
        if let Some(base_url) = given(&settings.llm_base_url) {
            check_url("slm.llm_base_url", &base_url)?;
            upstreams.push(UpstreamConfig {
                name: "default".into(),
                base_url,
                api_key: given(&settings.llm_api_key),
            });
        }
        let more = match settings.llm_upstreams {
            None => Vec::new(),
            Some(UpstreamList::List(list)) => list,
            Some(UpstreamList::Json(raw)) if raw.trim().is_empty() => Vec::new(),
            Some(UpstreamList::Json(raw)) => serde_json::from_str(&raw)
                .map_err(|e| ConfigError::invalid("slm.llm_upstreams", e.to_string()))?,
        };
        for upstream in more {
            check_url("slm.llm_upstreams", &upstream.base_url)?;
            if upstream.name.starts_with("local")
                || upstreams.iter().any(|u| u.name == upstream.name)
            {
                return Err(ConfigError::invalid(
                    "slm.llm_upstreams",
                    format!("the name `{}` is taken", upstream.name),
                ));
            }
            upstreams.push(upstream);
        }
        let default_model = given(&settings.llm_model);
        if upstreams.iter().any(|u| u.name == "default") && default_model.is_none() {
            return Err(ConfigError::invalid(
                "slm.llm_model",
                "must name the model when `slm.llm_base_url` is set",
            ));
        }
        let local_model = match settings.llm_model_path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::invalid(
                    "slm.llm_model_path",
                    format!("{} is not a file", path.display()),
                ));
            }
            Some(path) => Some(path),
            None => default_model_locations(data_dir)
                .into_iter()
                .find(|p| p.is_file()),
        };
        let embedding_model = match (
            given(&settings.embedding_model),
            settings.embedding_dimensions,
        ) {
            (None, _) => None,
            (Some(_), _) if !upstreams.iter().any(|u| u.name == "default") => {
                return Err(ConfigError::invalid(
                    "slm.embedding_model",
                    "names a model of the `default` upstream: set `slm.llm_base_url` too",
                ));
            }
            (Some(model), Some(size))
                if (1..=crate::domain::profile::MAX_DIMENSIONS).contains(&size) =>
            {
                Some((model, size))
            }
            (Some(_), _) => {
                return Err(ConfigError::invalid(
                    "slm.embedding_dimensions",
                    "must give the embedding model's vector size (1 to 8192)",
                ));
            }
        };
        let local_embeddings = match settings.embedding_model_dir {
            Some(dir) if !dir.join("model.safetensors").is_file() => {
                return Err(ConfigError::invalid(
                    "slm.embedding_model_dir",
                    format!("{} holds no model.safetensors", dir.display()),
                ));
            }
            Some(dir) => Some(dir),
            None => crate::minilm::default_locations(data_dir)
                .into_iter()
                .find(|d| d.join("model.safetensors").is_file()),
        };
        Ok(Self {
            embedding_model,
            embedding_price: crate::domain::pricing::Price {
                prompt_micros_per_1k: i64::from(settings.embedding_price),
                completion_micros_per_1k: 0,
            },
            local_embeddings,
            upstreams,
            default_model,
            local_model,
            requantize_q8: settings.llm_local_q8,
            default_price: crate::domain::pricing::Price {
                prompt_micros_per_1k: i64::from(settings.llm_price_prompt),
                completion_micros_per_1k: i64::from(settings.llm_price_completion),
            },
        })
    }
}

/// Where the local model is looked for when no path is configured.
pub fn default_model_locations(data_dir: &Path) -> Vec<PathBuf> {
    let mut places = vec![data_dir.join("models").join(LOCAL_MODEL_FILE)];
    if let Some(home) = std::env::home_dir() {
        places.push(home.join(".cache/somagent/models").join(LOCAL_MODEL_FILE));
    }
    places
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    somagent_common::config::http_url(key, value).map(|_| ())
}
