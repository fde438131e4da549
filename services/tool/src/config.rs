//! The tool service's own settings: `[tool]` in the configuration file,
//! `SOMAGENT_TOOL__<KEY>` in the environment.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolConfig {
    /// Whether tools may call addresses on private, loopback and link-local networks.
    /// Off by default: a tenant's tool must not reach the platform's own services or
    /// the cloud's metadata endpoint. Turn on for tools inside a trusted network.
    pub allow_private_networks: bool,
    /// Tool calls per minute per tenant, over all its tools; 0 turns the limit off.
    pub rate_limit_tenant: u32,
    /// The most of an answer kept and returned, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            rate_limit_tenant: 600,
            max_response_bytes: 1024 * 1024,
        }
    }
}
