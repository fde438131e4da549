//! `/v1/tools/*`: the tenant's tools (those the caller may use: the built-in adapters
//! and the tools a tenant defines from an OpenAPI 3 document), their credentials
//! (write-only: never returned) and sites, calls to their actions, and the log of those
//! calls.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::tool::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::paging::{Page, next_cursor};
use super::views::Problem;
use crate::Gateway;

#[derive(Serialize, ToSchema)]
pub struct ToolAction {
    name: String,
    description: String,
    /// The JSON-Schema of the arguments.
    #[schema(value_type = Object)]
    parameters: Value,
    /// The capability a caller needs.
    capability: String,
    rate_limit_per_minute: u32,
    timeout_ms: u64,
    /// The price of one call, in millionths of the tenant's currency.
    price_micros: i64,
    requires_approval: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ToolView {
    id: String,
    name: String,
    description: String,
    version: String,
    /// `builtin`: an adapter shipped with the platform; `http`: defined by the tenant
    /// from an OpenAPI document.
    kind: String,
    /// Where calls go: the tenant's own site when it set one.
    base_url: String,
    /// Every customer has its own host (a Jira site): set `base_url` with `PUT
    /// /v1/tools/{id}/credentials` before calling it.
    site_required: bool,
    /// The tenant has set where its instance is served.
    site_set: bool,
    /// Why the tool cannot run on this platform (its CLI is not installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
    /// How calls authenticate: `none`, `bearer`, `basic`, `header` or `query`.
    auth: String,
    /// Whether the tenant has set the tool's credential (which is never shown).
    credential_set: bool,
    actions: Vec<ToolAction>,
    /// When the tenant defined it; absent for a built-in adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

impl From<pb::Tool> for ToolView {
    fn from(t: pb::Tool) -> Self {
        Self {
            id: t.id,
            name: t.name,
            description: t.description,
            version: t.version,
            kind: t.kind,
            base_url: t.base_url,
            site_required: t.site_required,
            site_set: t.site_set,
            unavailable: Some(t.unavailable).filter(|u| !u.is_empty()),
            auth: t.auth,
            credential_set: t.credential_set,
            actions: t
                .actions
                .into_iter()
                .map(|a| ToolAction {
                    parameters: serde_json::from_str(&a.parameters_json).unwrap_or(Value::Null),
                    name: a.name,
                    description: a.description,
                    capability: a.capability,
                    rate_limit_per_minute: a.rate_limit_per_minute,
                    timeout_ms: a.timeout_ms,
                    price_micros: a.price_micros,
                    requires_approval: a.requires_approval,
                })
                .collect(),
            created_at: Some(t.created_at).filter(|c| !c.is_empty()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ToolList {
    tools: Vec<ToolView>,
}

/// A tool defined from an OpenAPI 3 document (each operation becomes an action), or an
/// MCP server mounted as one (each of its tools becomes an action).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTool {
    /// `acme-crm`: 2-63 lowercase letters, digits or `-`.
    id: String,
    /// The OpenAPI 3 document (JSON); or give `mcp`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    openapi: Option<Value>,
    /// An MCP server to mount; or give `openapi`.
    #[serde(default)]
    mcp: Option<McpServer>,
    /// Turns on the code tool (Python and shell run in the platform's sandbox) under
    /// this id; tenant admins only. Or give `openapi` or `mcp`.
    #[serde(default)]
    sandbox: Option<SandboxBody>,
    /// Turns on the browser tool (pages in a headless Chromium, as Playwright drives
    /// it: read, click, fill forms, evaluate, screenshot) under this id; tenant admins
    /// only. Give it as `{}`.
    #[serde(default)]
    browser: Option<BrowserBody>,
    /// Overrides the document's first server.
    #[serde(default)]
    base_url: Option<String>,
    /// Calls per minute per tenant, for each action (default 60).
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
    /// Each action's timeout (default 30 000, at most 300 000).
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// The price of one call, in millionths of the tenant's currency (default 0).
    #[serde(default)]
    price_micros: i64,
    /// Whether each call needs a person's approval.
    #[serde(default)]
    requires_approval: bool,
}

/// The browser tool has no settings of its own yet.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrowserBody {}

/// What code run in the sandbox may reach.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxBody {
    /// Whether runs may use the network (default: no network at all). They go out only
    /// through the platform's egress proxy, to what tools may reach.
    #[serde(default)]
    network: bool,
    /// With `network`: the hosts runs may reach (`pypi.org`, `*.githubusercontent.com`);
    /// none: any host tools may reach.
    #[serde(default)]
    allow_hosts: Vec<String>,
    /// `code` (Python and shell; the default) or `terraform` (the terraform CLI:
    /// validate, plan, apply after approval).
    #[serde(default)]
    runner: String,
}

/// An MCP server reached over Streamable HTTP (`url`), or one the operator allows over
/// stdio (`command`, a name from `tool.mcp_commands`), started in the sandbox for each
/// call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Its endpoint, e.g. `https://mcp.example.com/mcp`.
    #[serde(default)]
    url: String,
    /// The name of a stdio server the operator allows.
    #[serde(default)]
    command: String,
    /// Sent as a bearer token when listing and calling its tools; kept sealed as the
    /// tool's credential (replace it with `PUT /v1/tools/{id}/credentials`).
    #[serde(default)]
    credential: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// The secret the tool's API takes: a token, an API key, `email:api_token`; or, for
    /// the cloud tools, a document (given as an object or as its JSON text): AWS access
    /// keys `{access_key_id, secret_access_key, session_token?, region}`, an Azure AD
    /// application `{tenant_id, client_id, client_secret, subscription_id}`, a GCP
    /// service account's key file, or for Kubernetes a kubeconfig's text (YAML).
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    credential: CredentialText,
    /// Where the tenant's instance is served (a Jira site, GitHub Enterprise, a
    /// self-hosted GitLab): calls go there instead of the tool's default.
    #[serde(default)]
    base_url: String,
}

/// A credential as text, or as a JSON document sent as its text.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum CredentialText {
    #[default]
    Absent,
    Text(String),
    Document(serde_json::Map<String, serde_json::Value>),
}

impl CredentialText {
    fn into_text(self) -> String {
        match self {
            Self::Absent => String::new(),
            Self::Text(text) => text,
            Self::Document(document) => serde_json::Value::Object(document).to_string(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CredentialState {
    credential_set: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    action: String,
    /// The arguments, checked against the action's schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: Option<Value>,
    /// The session the call belongs to, if any.
    #[serde(default)]
    session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct InvokeResult {
    invocation_id: String,
    /// The tool's HTTP status.
    status: u32,
    /// The tool's answer: its JSON, or `{"text": ...}`.
    #[schema(value_type = Object)]
    result: Value,
    duration_ms: u64,
    cost_micros: i64,
}

#[derive(Serialize, ToSchema)]
pub struct InvocationView {
    id: String,
    tool_id: String,
    action: String,
    /// Who called.
    subject: String,
    session_id: Option<String>,
    /// `ok`, `denied`, `failed` or `timeout`.
    outcome: String,
    status: u32,
    duration_ms: u64,
    cost_micros: i64,
    created_at: String,
    /// Who approved the call, for an action that requires approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InvocationPage {
    invocations: Vec<InvocationView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `?tool_id=` of the invocation log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvocationFilter {
    /// Only this tool's calls.
    #[serde(default)]
    tool_id: Option<String>,
}

/// The tenant's tools the caller may use (actions it lacks the capability for are left out).
#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    responses((status = 200, body = ToolList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<ToolList>, ApiError> {
    auth.principal.require(Capability::ToolsRead)?;
    let answer = gateway
        .tool
        .clone()
        .list_tools(auth.forward(pb::ListToolsRequest::default()))
        .answer()
        .await?;
    Ok(Json(ToolList {
        tools: answer.tools.into_iter().map(ToolView::from).collect(),
    }))
}

/// Define a tool from an OpenAPI 3 document, or mount an MCP server as one
/// (`tools:write`).
#[utoipa::path(post, path = "/v1/tools", tag = "tools", request_body = NewTool,
    responses((status = 201, body = ToolView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<NewTool>, JsonRejection>,
) -> Result<(StatusCode, Json<ToolView>), ApiError> {
    auth.principal.require(Capability::ToolsWrite)?;
    let b = json_body(body)?;
    let (mcp_url, credential) = match b.mcp {
        None => Default::default(),
        Some(m) => match (m.url.is_empty(), m.command.is_empty()) {
            (false, true) => (m.url, m.credential),
            // The tool service stores a stdio server's mount under `stdio:<name>`.
            (true, false) => (format!("stdio:{}", m.command), m.credential),
            _ => {
                return Err(ApiError::validation(
                    "mcp",
                    "has a url or a command, not both",
                ));
            }
        },
    };
    let request = pb::CreateToolRequest {
        id: b.id,
        openapi_json: b.openapi.map(|d| d.to_string()).unwrap_or_default(),
        base_url: b.base_url.unwrap_or_default(),
        rate_limit_per_minute: b.rate_limit_per_minute.unwrap_or(0),
        timeout_ms: b.timeout_ms.unwrap_or(0),
        price_micros: b.price_micros,
        requires_approval: b.requires_approval,
        mcp_url,
        credential,
        sandbox: b.sandbox.is_some(),
        browser: b.browser.is_some(),
        sandbox_network: b.sandbox.as_ref().is_some_and(|s| s.network),
        sandbox_allow_hosts: b
            .sandbox
            .as_ref()
            .map(|s| s.allow_hosts.clone())
            .unwrap_or_default(),
        sandbox_runner: b.sandbox.map(|s| s.runner).unwrap_or_default(),
    };
    let tool = gateway
        .tool
        .clone()
        .create_tool(auth.forward(request))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(tool.into())))
}

/// One tool.
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools", params(("id" = String, Path, description = "the tool's id")),
    responses((status = 200, body = ToolView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ToolView>, ApiError> {
    auth.principal.require(Capability::ToolsRead)?;
    let tool = gateway
        .tool
        .clone()
        .get_tool(auth.forward(pb::GetToolRequest { id }))
        .answer()
        .await?;
    Ok(Json(tool.into()))
}

/// Remove a tool the tenant defined, with its credential.
#[utoipa::path(delete, path = "/v1/tools/{id}", tag = "tools", params(("id" = String, Path, description = "the tool's id")),
    responses((status = 204, description = "removed"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.principal.require(Capability::ToolsWrite)?;
    gateway
        .tool
        .clone()
        .delete_tool(auth.forward(pb::GetToolRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set the tenant's credential for a tool (sealed at rest, never returned), where its
/// instance is served, or both.
#[utoipa::path(put, path = "/v1/tools/{id}/credentials", tag = "tools", params(("id" = String, Path, description = "the tool's id")),
    request_body = CredentialBody,
    responses((status = 200, body = CredentialState), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put_credential(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<CredentialBody>, JsonRejection>,
) -> Result<Json<CredentialState>, ApiError> {
    auth.principal.require(Capability::ToolsWrite)?;
    let b = json_body(body)?;
    let answer = gateway
        .tool
        .clone()
        .put_credential(auth.forward(pb::PutCredentialRequest {
            id,
            credential: b.credential.into_text(),
            base_url: b.base_url,
        }))
        .answer()
        .await?;
    Ok(Json(CredentialState {
        credential_set: answer.credential_set,
    }))
}

/// Remove the tenant's credential for a tool.
#[utoipa::path(delete, path = "/v1/tools/{id}/credentials", tag = "tools", params(("id" = String, Path, description = "the tool's id")),
    responses((status = 200, body = CredentialState), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_credential(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<CredentialState>, ApiError> {
    auth.principal.require(Capability::ToolsWrite)?;
    let answer = gateway
        .tool
        .clone()
        .delete_credential(auth.forward(pb::GetToolRequest { id }))
        .answer()
        .await?;
    Ok(Json(CredentialState {
        credential_set: answer.credential_set,
    }))
}

/// Call one of a tool's actions: arguments checked against its schema (422 naming the
/// field), a policy decision on the call (403 when denied), rate limits (429), the
/// tenant's credential (409 when it is not set), the tool's failure as a 502 with its
/// status (never its body).
#[utoipa::path(post, path = "/v1/tools/{id}/invoke", tag = "tools", params(("id" = String, Path, description = "the tool's id"), ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key within a day gets the first answer; the tool is not called again")),
    request_body = InvokeBody,
    responses((status = 200, body = InvokeResult), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem), (status = 502, body = Problem), (status = 504, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn invoke(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<InvokeBody>, JsonRejection>,
) -> Result<Json<InvokeResult>, ApiError> {
    auth.principal.require(Capability::ToolsInvoke)?;
    let b = json_body(body)?;
    let request = pb::InvokeRequest {
        tool_id: id,
        action: b.action,
        arguments_json: b.arguments.map(|a| a.to_string()).unwrap_or_default(),
        session_id: b.session_id,
        approved_by: String::new(),
        idempotency_key: idempotency_key(&headers)?,
    };
    let answer = gateway
        .tool
        .clone()
        .invoke(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(InvokeResult {
        invocation_id: answer.invocation_id,
        status: answer.status,
        result: serde_json::from_str(&answer.result_json).unwrap_or(Value::Null),
        duration_ms: answer.duration_ms,
        cost_micros: answer.cost_micros,
    }))
}

/// The `Idempotency-Key` header: a retried call with the same key gets the first
/// call's answer within a day, and the tool is not called twice.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(String::new());
    };
    value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::validation("Idempotency-Key", "is 1-255 visible ASCII characters"))
}

/// Who called which tool, when, how it ended, how long it took and what it cost, newest
/// first (the caller's own calls; all of the tenant's for its admins).
#[utoipa::path(get, path = "/v1/tools/invocations", tag = "tools", params(Page, InvocationFilter),
    responses((status = 200, body = InvocationPage), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn invocations(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
    Query(filter): Query<InvocationFilter>,
) -> Result<Json<InvocationPage>, ApiError> {
    auth.principal.require(Capability::ToolsRead)?;
    let answer = gateway
        .tool
        .clone()
        .list_invocations(auth.forward(pb::ListInvocationsRequest {
            page: Some(PageRequest::from(page)),
            tool_id: filter.tool_id.unwrap_or_default(),
        }))
        .answer()
        .await?;
    Ok(Json(InvocationPage {
        invocations: answer
            .invocations
            .into_iter()
            .map(|i| InvocationView {
                id: i.id,
                tool_id: i.tool_id,
                action: i.action,
                subject: i.subject,
                session_id: Some(i.session_id).filter(|s| !s.is_empty()),
                outcome: i.outcome,
                status: i.status,
                duration_ms: i.duration_ms,
                cost_micros: i.cost_micros,
                created_at: i.created_at,
                approved_by: Some(i.approved_by).filter(|s| !s.is_empty()),
            })
            .collect(),
        next_cursor: next_cursor(answer.page),
    }))
}
