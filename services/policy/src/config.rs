//! Policy's own settings: `[policy]` in the configuration file, `SOMAGENT_POLICY__<KEY>`
//! in the environment.

use serde::Deserialize;
use somagent_common::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// An OPA server (`http://opa:8181`) to take decisions; unset means the embedded
    /// Rego engine in this process.
    pub opa_url: Option<String>,
}

impl PolicyConfig {
    /// The OPA server's base URL, checked to be http(s).
    pub fn opa_url(&self) -> Result<Option<url::Url>, ConfigError> {
        let Some(raw) = self.opa_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        somagent_common::config::http_url("policy.opa_url", raw).map(Some)
    }
}
