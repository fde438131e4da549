//! The tool service's own settings: `[tool]` in the configuration file,
//! `SOMAGENT_TOOL__<KEY>` in the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// The Chromium the browser tool drives; empty looks in the usual places
    /// (`/usr/bin/chromium`). Without one the tool is listed as unavailable.
    pub chromium: String,
    /// MCP servers that run as a program speaking over its stdin and stdout, by name:
    /// the operator allows each one here, and a tenant mounts it by name
    /// (`{"mcp": {"command": "<name>"}}`). Each call starts it in the sandbox.
    pub mcp_commands: BTreeMap<String, StdioServer>,
}

/// An MCP server run over stdio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioServer {
    /// The program and its arguments, e.g. `["npx", "-y", "@acme/mcp-server"]`.
    pub command: Vec<String>,
    /// Whether it may use the network (off: none at all), through the egress proxy.
    #[serde(default)]
    pub network: bool,
    /// With `network`: the hosts it may reach; none: any host tools may reach.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Its environment besides PATH and LANG.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directories it may read besides the system's (its code, its packages).
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// The environment variable the tenant's credential for the mount is given in,
    /// if it takes one (`GITHUB_TOKEN`).
    #[serde(default)]
    pub credential_env: Option<String>,
}

impl Default for ToolConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            rate_limit_tenant: 600,
            max_response_bytes: 1024 * 1024,
            sandbox_memory_mb: 1024,
            sandbox_output_bytes: 64 * 1024,
            chromium: String::new(),
            mcp_commands: BTreeMap::new(),
        }
    }
}
