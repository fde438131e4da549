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
    /// The memory a sandboxed run may use, in MiB (its address space).
    pub sandbox_memory_mb: u64,
    /// The most of a sandboxed run's stdout (and of its stderr) kept, in bytes; more
    /// ends the run.
    pub sandbox_output_bytes: usize,
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            rate_limit_tenant: 600,
            max_response_bytes: 1024 * 1024,
            sandbox_memory_mb: 1024,
            sandbox_output_bytes: 64 * 1024,
        }
    }
}
