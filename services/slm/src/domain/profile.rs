//! Model profiles: a name a tenant calls a model by, with the upstream and model behind
//! it, its defaults, its fallbacks and its price.
//!
//! Prices belong to the platform: a [`Profile`] with an upstream, a model and a price is
//! the platform's (its configuration or a platform admin sets it); a tenant's
//! [`TenantProfile`] names one of those as its base and tunes only what changes no
//! price: temperature, token limit, timeout and fallbacks.

use super::pricing::Price;

/// How long a call may wait for the model's first byte, and between pieces, by default.
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// The largest vector an embedding profile may declare (the widest models give 4,096).
pub const MAX_DIMENSIONS: u32 = 8192;
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
    /// The platform's own profile rather than a tenant's tuning of one.
    pub platform: bool,
    /// For a tenant's profile, the platform profile it tunes.
    pub base: Option<String>,
    /// An embedding model's vector size; `None` for a chat model.
    pub dimensions: Option<u32>,
}

/// A tenant's tuning of a platform profile, as the tenant sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantProfile {
    pub name: String,
    /// The platform profile whose upstream, model and price this one uses.
    pub base: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub fallbacks: Vec<String>,
    pub timeout_ms: u32,
}

fn check_name(name: &str) -> Result<(), (&'static str, String)> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err((
            "name",
            "is 1-64 letters, digits, `-`, `_`, `.`, `:` or `/`".into(),
        ))
    }
}

fn check_tuning(
    name: &str,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    fallbacks: &[String],
    timeout_ms: u32,
) -> Result<(), (&'static str, String)> {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(("temperature", "is between 0 and 2".into()));
    }
    if max_tokens == Some(0) {
        return Err(("max_tokens", "is at least 1".into()));
    }
    if fallbacks.len() > MAX_FALLBACKS || fallbacks.iter().any(|f| f == name) {
        return Err((
            "fallbacks",
            format!("names at most {MAX_FALLBACKS} other profiles"),
        ));
    }
    if !(100..=600_000).contains(&timeout_ms) {
        return Err(("timeout_ms", "is between 100 and 600000".into()));
    }
    Ok(())
}

impl TenantProfile {
    /// Checks a profile a tenant sets; the message names what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_name(&self.name)?;
        if self.base.is_empty() {
            return Err(("base", "names the platform profile this one tunes".into()));
        }
        check_tuning(
            &self.name,
            self.temperature,
            self.max_tokens,
            &self.fallbacks,
            self.timeout_ms,
        )
    }

    /// The profile calls use: the base's upstream, model and price under this tuning.
    /// The base's token limit stays a ceiling a tenant can lower but not raise.
    pub fn over(&self, base: &Profile) -> Profile {
        Profile {
            name: self.name.clone(),
            upstream: base.upstream.clone(),
            model: base.model.clone(),
            temperature: self.temperature.or(base.temperature),
            max_tokens: match (self.max_tokens, base.max_tokens) {
                (Some(own), Some(most)) => Some(own.min(most)),
                (own, most) => own.or(most),
            },
            fallbacks: self.fallbacks.clone(),
            price: base.price,
            currency: base.currency.clone(),
            timeout_ms: self.timeout_ms,
            platform: false,
            base: Some(base.name.clone()),
            dimensions: base.dimensions,
        }
    }
}

impl Profile {
    /// Checks a platform profile; the message names what is wrong.
    pub fn validate(&self, upstreams: &[&str]) -> Result<(), (&'static str, String)> {
        check_name(&self.name)?;
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
        check_tuning(
            &self.name,
            self.temperature,
            self.max_tokens,
            &self.fallbacks,
            self.timeout_ms,
        )?;
        if self.price.prompt_micros_per_1k < 0 || self.price.completion_micros_per_1k < 0 {
            return Err(("price", "is not negative".into()));
        }
        if let Some(size) = self.dimensions
            && !(1..=MAX_DIMENSIONS).contains(&size)
        {
            return Err(("dimensions", format!("is between 1 and {MAX_DIMENSIONS}")));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(("currency", "is an ISO 4217 code such as USD".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pricing::Price;

    #[test]
    fn a_tenant_tuning_costs_what_its_base_costs() {
        let base = Profile {
            name: "default".into(),
            upstream: "default".into(),
            model: "gpt-x".into(),
            temperature: Some(0.7),
            max_tokens: Some(1000),
            fallbacks: Vec::new(),
            price: Price {
                prompt_micros_per_1k: 500,
                completion_micros_per_1k: 1500,
            },
            currency: "EUR".into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            platform: true,
            base: None,
            dimensions: None,
        };
        let tuned = TenantProfile {
            name: "careful".into(),
            base: "default".into(),
            temperature: Some(0.1),
            max_tokens: Some(5000),
            fallbacks: Vec::new(),
            timeout_ms: 1000,
        }
        .over(&base);
        assert_eq!((tuned.price, tuned.currency.as_str()), (base.price, "EUR"));
        assert_eq!(
            (tuned.upstream.as_str(), tuned.model.as_str()),
            ("default", "gpt-x")
        );
        assert_eq!(tuned.temperature, Some(0.1));
        assert_eq!(
            tuned.max_tokens,
            Some(1000),
            "the base's limit is a ceiling"
        );
        assert!(!tuned.platform);
        assert_eq!(tuned.base.as_deref(), Some("default"));
    }
}
