//! Model profiles: a name a tenant calls a model by, with the upstream and model behind
//! it, its defaults, its fallbacks and its price.

use super::pricing::Price;

/// How long a call may wait for the model's first byte, and between pieces, by default.
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// The longest fallback chain followed.
pub const MAX_FALLBACKS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub upstream: String,
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub fallbacks: Vec<String>,
    pub price: Price,
    pub currency: String,
    pub timeout_ms: u32,
    /// Built in by the platform's configuration rather than set by the tenant.
    pub platform: bool,
}

impl Profile {
    /// Checks a profile a tenant sets; the message names what is wrong.
    pub fn validate(&self, upstreams: &[&str]) -> Result<(), (&'static str, String)> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')
            });
        if !name_ok {
            return Err((
                "name",
                "is 1-64 letters, digits, `-`, `_`, `.`, `:` or `/`".into(),
            ));
        }
        if !upstreams.contains(&self.upstream.as_str()) {
            return Err((
                "upstream",
                format!(
                    "is one of the configured upstreams: {}",
                    upstreams.join(", ")
                ),
            ));
        }
        if self.model.is_empty() || self.model.len() > 200 {
            return Err(("model", "is 1-200 characters".into()));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(("temperature", "is between 0 and 2".into()));
        }
        if self.max_tokens == Some(0) {
            return Err(("max_tokens", "is at least 1".into()));
        }
        if self.fallbacks.len() > MAX_FALLBACKS || self.fallbacks.contains(&self.name) {
            return Err((
                "fallbacks",
                format!("names at most {MAX_FALLBACKS} other profiles"),
            ));
        }
        if self.price.prompt_micros_per_1k < 0 || self.price.completion_micros_per_1k < 0 {
            return Err(("price", "is not negative".into()));
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err(("timeout_ms", "is between 100 and 600000".into()));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(("currency", "is an ISO 4217 code such as USD".into()));
        }
        Ok(())
    }
}
