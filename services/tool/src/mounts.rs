//! Tools a tenant adds beside those it defines from OpenAPI: an MCP server mounted as
//! one (the server is asked for its tools, with the tenant's credential, when given, as
//! a bearer token; each becomes an action with the server's input schema), and the code
//! tool turned on (Python and shell in the sandbox; tenant admins only). Each is stored
//! like any other tool, so its calls run under the same checks, policy, approvals,
//! limits and metering.

use std::time::Duration;

use somagent_common::auth::{Capability, Principal};
use somagent_common::error::{ApiError, ErrorCode};

use crate::domain::manifest::{MAX_TIMEOUT, SandboxPolicy, is_host_pattern};
use crate::domain::openapi::ToolDefaults;
use crate::domain::{code, mcp};
use crate::invocations::Invoker;
use crate::mcp_client;
use crate::tools::{MAX_CREDENTIAL, ToolView, check_new_id};

/// What a tenant asks for when it mounts an MCP server.
#[derive(Debug, Clone)]
pub struct NewMcpTool {
    pub id: String,
    /// The server's Streamable HTTP endpoint, or `stdio:<name>` for a server the
    /// operator allows over stdio.
    pub url: String,
    /// Sent as a bearer token, and kept sealed as the tool's credential.
    pub credential: String,
    pub rate_limit_per_minute: Option<u32>,
    pub timeout: Option<Duration>,
    pub price_micros: i64,
    pub requires_approval: bool,
}

/// How long listing a server's tools may take.
const LISTING: Duration = Duration::from_secs(20);

impl Invoker {
    pub async fn mount(
        &self,
        principal: &Principal,
        asked: NewMcpTool,
    ) -> Result<ToolView, ApiError> {
        principal.require(Capability::ToolsWrite)?;
        check_new_id(&asked.id)?;
        if asked.credential.len() > MAX_CREDENTIAL {
            return Err(ApiError::validation(
                "credential",
                "is at most 16384 characters",
            ));
        }
        let url = match asked.url.strip_prefix(mcp_client::STDIO) {
            Some(name) => {
                if !self.config.mcp_commands.contains_key(name) {
                    let allowed: Vec<&String> = self.config.mcp_commands.keys().collect();
                    return Err(ApiError::validation(
                        "mcp.command",
                        "names an MCP server the operator allows (tool.mcp_commands)",
                    )
                    .with_details(serde_json::json!({"allowed": allowed})));
                }
                asked.url.clone()
            }
            None => url::Url::parse(&asked.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
                .ok_or_else(|| ApiError::validation("mcp.url", "is an http or https URL"))?
                .to_string(),
        };
        let bearer = Some(asked.credential.as_str()).filter(|c| !c.is_empty());
        let endpoint = self.mcp_endpoint(&url, bearer, LISTING)?;
        let (server, tools) = tokio::time::timeout(LISTING, mcp_client::list(&endpoint))
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Timeout,
                    "the MCP server did not list its tools in time",
                )
            })?
            .map_err(|reason| {
                ApiError::new(
                    ErrorCode::UpstreamFailed,
                    "the MCP server could not be mounted",
                )
                .with_details(serde_json::json!({"reason": reason}))
            })?;
        let defaults = ToolDefaults {
            id: asked.id.clone(),
            base_url: None,
            rate_limit_per_minute: asked.rate_limit_per_minute.unwrap_or(60),
            timeout: asked.timeout.unwrap_or(Duration::from_secs(30)),
            price_micros: asked.price_micros,
            requires_approval: asked.requires_approval,
        };
        let manifest = mcp::manifest_from(&url, &server, &tools, &defaults, bearer.is_some())
            .map_err(|e| ApiError::validation(&e.field, e.message))?;
        let mut view = self.registry.add(principal, "mcp", manifest).await?;
        if let Some(credential) = bearer {
            self.registry
                .put_credential(principal, &asked.id, credential, "")
                .await?;
            view.credential_set = true;
        }
        Ok(view)
    }
}

impl Invoker {
    /// Turns on a sandboxed tool for the tenant, under `id`: the code tool (`code`) or
    /// Terraform (`terraform`), run with network only when `network`. Running code is a
    /// tenant admin's decision.
    pub async fn enable_sandboxed(
        &self,
        principal: &Principal,
        id: &str,
        runner: &str,
        policy: SandboxPolicy,
        timeout: Option<Duration>,
        price_micros: i64,
    ) -> Result<ToolView, ApiError> {
        check_platform_tool(principal, id, price_micros)?;
        if let Some(bad) = policy.allow_hosts.iter().find(|h| !is_host_pattern(h)) {
            return Err(ApiError::validation(
                "sandbox.allow_hosts",
                format!("`{bad}` is not a host name or `*.` and one"),
            ));
        }
        if !policy.network && !policy.allow_hosts.is_empty() {
            return Err(ApiError::validation(
                "sandbox.allow_hosts",
                "needs `network: true`",
            ));
        }
        let manifest = match runner {
            "" | "code" => code::code_tool(
                id,
                policy,
                timeout.unwrap_or(Duration::from_secs(30)).min(MAX_TIMEOUT),
                price_micros,
            ),
            "terraform" => code::terraform_tool(
                id,
                policy,
                timeout.unwrap_or(Duration::from_secs(120)).min(MAX_TIMEOUT),
                price_micros,
            ),
            _ => {
                return Err(ApiError::validation(
                    "sandbox.runner",
                    "is `code` or `terraform`",
                ));
            }
        };
        self.registry.add(principal, "sandbox", manifest).await
    }
}

impl Invoker {
    /// Turns on the browser tool for the tenant, under `id`. Pages run scripts and reach
    /// the web on the tenant's behalf: a tenant admin's decision.
    pub async fn enable_browser(
        &self,
        principal: &Principal,
        id: &str,
        timeout: Option<Duration>,
        price_micros: i64,
    ) -> Result<ToolView, ApiError> {
        check_platform_tool(principal, id, price_micros)?;
        let timeout = timeout.unwrap_or(Duration::from_secs(45)).min(MAX_TIMEOUT);
        let manifest = crate::domain::browser::browser_tool(id, timeout, price_micros);
        self.registry.add(principal, "browser", manifest).await
    }
}

/// What turning on a tool the platform runs itself (code, Terraform, the browser)
/// takes: a tenant admin, a new id, a price that is not negative.
fn check_platform_tool(principal: &Principal, id: &str, price_micros: i64) -> Result<(), ApiError> {
    principal.require(Capability::ToolsWrite)?;
    principal.require(Capability::TenantAdmin)?;
    check_new_id(id)?;
    if price_micros < 0 {
        return Err(ApiError::validation("price_micros", "is not negative"));
    }
    Ok(())
}
