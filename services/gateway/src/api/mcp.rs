//! `/mcp`: the caller's tools to any MCP client (an IDE, another agent) over MCP's
//! Streamable HTTP transport, under the platform's governance. The request is
//! authenticated as every other (bearer token or `X-API-Key`, counted against the
//! tenant's and the key's limits); `tools/list` is what the caller may use of the
//! tenant's tools that are set up, each action a tool `<tool>__<action>` with its
//! JSON-Schema; `tools/call` runs through the tool service exactly as `POST
//! /v1/tools/{id}/invoke` does (schema, policy, limits, credential, metering, audit).
//! Actions that require a person's approval are left out: only a session turn can ask
//! for one. Stateless and JSON: any replica answers any request.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::tool::v1 as pb;
use somagent_common::tool_functions::{describe, function_name, split_function_name};

use super::Authenticated;
use crate::Gateway;

/// The most a request to `/mcp` may carry.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The verified caller of an MCP request, for the handler.
#[derive(Clone)]
struct Caller {
    token: String,
}

impl Caller {
    fn forward<T>(&self, request: T) -> tonic::Request<T> {
        somagent_common::auth::grpc::with_bearer(&self.token, tonic::Request::new(request))
    }
}

/// The MCP server of one request: the tenant's tools, as the caller may use them.
#[derive(Clone)]
struct PlatformTools {
    gateway: Gateway,
}

/// `/mcp`, behind the platform's authentication.
pub fn routes(gateway: Gateway) -> Router {
    let handler = PlatformTools {
        gateway: gateway.clone(),
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(MAX_BODY)
        // Every request carries a bearer token or an API key, which a page rebinding a
        // name to this host cannot add: the Host check guards unauthenticated local
        // servers, and a deployment's hosts are its own.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            authenticate,
        ))
        .with_state(gateway)
}

/// Lets through only a caller who may read tools, their token kept for the handler.
async fn authenticate(auth: Authenticated, mut request: Request, next: Next) -> Response {
    if let Err(refused) = auth.principal.require(Capability::ToolsRead) {
        return refused.into_response();
    }
    request
        .extensions_mut()
        .insert(Caller { token: auth.token });
    next.run(request).await
}

fn caller(context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))
}

/// A problem as an MCP tool error: the caller's client shows it.
fn tool_error(error: ApiError) -> CallToolResult {
    let mut problem = json!({"code": error.code.as_str(), "message": error.message});
    if !error.details.is_null() {
        problem["details"] = error.details;
    }
    CallToolResult::error(vec![ContentBlock::text(
        json!({ "error": problem }).to_string(),
    )])
}

impl ServerHandler for PlatformTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("somagent", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools of your SomaAgent tenant: each `<tool>__<action>` runs under the tenant's policy, limits and metering.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller(&context)?;
        let listed = self
            .gateway
            .tool
            .clone()
            .list_tools(caller.forward(pb::ListToolsRequest::default()))
            .await
            .map_err(|status| {
                let error = ApiError::from(status);
                ErrorData::internal_error(error.message, None)
            })?
            .into_inner();
        let mut tools = Vec::new();
        for tool in listed.tools {
            if !tool.ready {
                continue;
            }
            for action in tool.actions.iter().filter(|a| !a.requires_approval) {
                let schema = match serde_json::from_str::<Value>(&action.parameters_json) {
                    Ok(Value::Object(schema)) => schema,
                    _ => serde_json::Map::from_iter([("type".to_owned(), json!("object"))]),
                };
                let Some(name) = function_name(&tool.id, &action.name) else {
                    continue;
                };
                let description = describe(&tool.name, &action.description);
                tools.push(Tool::new(name, description, Arc::new(schema)));
            }
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = caller(&context)?;
        let Some((tool, action)) = split_function_name(&request.name) else {
            return Ok(tool_error(ApiError::not_found("tool")).into());
        };
        let arguments = request.arguments.map_or_else(|| json!({}), Value::Object);
        let answer = self
            .gateway
            .tool
            .clone()
            .invoke(caller.forward(pb::InvokeRequest {
                tool_id: tool.to_owned(),
                action: action.to_owned(),
                arguments_json: arguments.to_string(),
                ..Default::default()
            }))
            .await;
        Ok(match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(answer.result_json.clone())]);
                result.structured_content = serde_json::from_str(&answer.result_json)
                    .ok()
                    .filter(Value::is_object);
                result
            }
            Err(status) => tool_error(ApiError::from(status)),
        }
        .into())
    }
}
