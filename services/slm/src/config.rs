//! Where the models are: the upstreams an operator configures and the local model.
//!
//! - `SOMAGENT_LLM_BASE_URL`, `SOMAGENT_LLM_API_KEY[_FILE]`, `SOMAGENT_LLM_MODEL`: the
//!   `default` upstream, any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp
//!   server, Ray Serve), and its model.
//! - `SOMAGENT_LLM_UPSTREAMS[_FILE]`: more, as JSON `[{"name", "base_url", "api_key"?}]`,
//!   for platform profiles to name.
//! - `SOMAGENT_LLM_MODEL_PATH`: the local model's GGUF file (SmolLM2-135M-Instruct);
//!   by default looked for in `<data dir>/models/` and `~/.cache/somagent/models/`.
//! - `SOMAGENT_LLM_PRICE_PROMPT`, `SOMAGENT_LLM_PRICE_COMPLETION`: what the platform's
//!   `default` profile costs, in millionths of USD per 1,000 tokens (0 by default).
//!
//! Tenants never give URLs: a profile names a configured upstream, so no tenant can
//! make the platform call an address of their choosing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

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

#[derive(Debug, Clone)]
pub struct SlmConfig {
    pub upstreams: Vec<UpstreamConfig>,
    /// The `default` upstream's model.
    pub default_model: Option<String>,
    pub local_model: Option<PathBuf>,
    pub default_price: crate::domain::pricing::Price,
}

fn env(name: &str) -> Option<String> {
    std::env::var(format!("SOMAGENT_{name}"))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn price(name: &str) -> anyhow::Result<i64> {
    env(name).map_or(Ok(0), |raw| {
        raw.trim().parse::<i64>().ok().filter(|p| *p >= 0).with_context(|| {
            format!("configuration: invalid value for `SOMAGENT_{name}`: `{raw}` is not a price in micros per 1,000 tokens")
        })
    })
}

impl SlmConfig {
    pub fn from_env(data_dir: &Path) -> anyhow::Result<Self> {
        let mut upstreams = Vec::new();
        if let Some(base_url) = env("LLM_BASE_URL") {
            check_url("SOMAGENT_LLM_BASE_URL", &base_url)?;
            upstreams.push(UpstreamConfig {
                name: "default".into(),
                base_url,
                api_key: somagent_common::config::secret_from_env("LLM_API_KEY")?,
            });
        }
        if let Some(raw) = somagent_common::config::secret_from_env("LLM_UPSTREAMS")? {
            let more: Vec<UpstreamConfig> = serde_json::from_str(&raw).map_err(|e| {
                anyhow::anyhow!("configuration: invalid value for `SOMAGENT_LLM_UPSTREAMS`: {e}")
            })?;
            for upstream in more {
                check_url("SOMAGENT_LLM_UPSTREAMS", &upstream.base_url)?;
                if upstream.name == "local"
                    || upstreams
                        .iter()
                        .any(|u: &UpstreamConfig| u.name == upstream.name)
                {
                    anyhow::bail!(
                        "configuration: invalid value for `SOMAGENT_LLM_UPSTREAMS`: the name `{}` is taken",
                        upstream.name
                    );
                }
                upstreams.push(upstream);
            }
        }
        let default_model = env("LLM_MODEL");
        if upstreams.iter().any(|u| u.name == "default") && default_model.is_none() {
            anyhow::bail!(
                "configuration: `SOMAGENT_LLM_MODEL` must name the model when `SOMAGENT_LLM_BASE_URL` is set"
            );
        }
        let local_model = match env("LLM_MODEL_PATH") {
            Some(path) => {
                let path = PathBuf::from(path);
                anyhow::ensure!(
                    path.is_file(),
                    "configuration: invalid value for `SOMAGENT_LLM_MODEL_PATH`: {} is not a file",
                    path.display()
                );
                Some(path)
            }
            None => default_model_locations(data_dir)
                .into_iter()
                .find(|p| p.is_file()),
        };
        Ok(Self {
            upstreams,
            default_model,
            local_model,
            default_price: crate::domain::pricing::Price {
                prompt_micros_per_1k: price("LLM_PRICE_PROMPT")?,
                completion_micros_per_1k: price("LLM_PRICE_COMPLETION")?,
            },
        })
    }
}

/// Where the local model is looked for when no path is configured.
pub fn default_model_locations(data_dir: &Path) -> Vec<PathBuf> {
    let mut places = vec![data_dir.join("models").join(LOCAL_MODEL_FILE)];
    if let Some(home) = std::env::var_os("HOME") {
        places.push(
            PathBuf::from(home)
                .join(".cache/somagent/models")
                .join(LOCAL_MODEL_FILE),
        );
    }
    places
}

fn check_url(key: &str, value: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(value)
        .map_err(|e| anyhow::anyhow!("configuration: invalid value for `{key}`: `{value}`: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "configuration: invalid value for `{key}`: `{value}` is not an http(s) URL"
    );
    Ok(())
}
