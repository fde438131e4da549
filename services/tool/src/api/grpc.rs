//! The tool service's gRPC surface: the registry, credentials (write-only) and
//! invocations. Another tenant's tool is "not found".

use std::time::Duration;

use somagent_common::auth::grpc::{bearer_of, caller};
use somagent_common::clock::rfc3339;
use somagent_common::error::ApiError;
use somagent_common::paging::PageSize;
use somagent_common::proto::common::v1::PageInfo;
use somagent_common::proto::tool::v1 as pb;
use somagent_common::proto::tool::v1::tool_service_server::ToolService;
use tonic::{Request, Response, Status};

use crate::domain::manifest::{AuthScheme, ToolManifest};
use crate::invocations::{Call, Invoker};
use crate::mounts::NewMcpTool;
use crate::store::InvocationRecord;
use crate::tools::{NewHttpTool, ToolView};

pub struct ToolGrpc {
    pub invoker: Invoker,
}

/// Whether a tool can be called now: its credential and site set where it needs them,
/// and nothing it runs missing here (`unavailable`).
fn ready(m: &ToolManifest, credential_set: bool, site_set: bool, unavailable: bool) -> bool {
    (!m.auth.needs_credential() || credential_set) && (!m.site_required || site_set) && !unavailable
}

fn tool_message(invoker: &Invoker, view: ToolView) -> pb::Tool {
    let m = view.tool.manifest;
    let unavailable = invoker.unavailable(&m).unwrap_or_default();
    let ready = ready(
        &m,
        view.credential_set,
        view.tool.site_set,
        !unavailable.is_empty(),
    );
    pb::Tool {
        unavailable,
        ready,
        id: m.id,
        name: m.name,
        description: m.description,
        version: m.version,
        kind: view.tool.kind,
        base_url: m.base_url,
        auth: match m.auth {
            AuthScheme::None => "none",
            AuthScheme::Bearer => "bearer",
            AuthScheme::Header { .. } => "header",
            AuthScheme::Query { .. } => "query",
            AuthScheme::Basic => "basic",
            AuthScheme::AwsSigV4 => "aws_sig_v4",
            AuthScheme::AzureClientCredentials { .. } => "azure_client_credentials",
            AuthScheme::GoogleServiceAccount { .. } => "google_service_account",
            AuthScheme::Kubeconfig => "kubeconfig",
        }
        .into(),
        credential_set: view.credential_set,
        actions: m
            .actions
            .into_iter()
            .map(|a| pb::Action {
                name: a.name,
                description: a.description,
                parameters_json: a.parameters.to_string(),
                capability: a.capability,
                rate_limit_per_minute: a.rate_limit_per_minute,
                timeout_ms: u64::try_from(a.timeout.as_millis()).unwrap_or(u64::MAX),
                price_micros: a.price_micros,
                requires_approval: a.requires_approval,
            })
            .collect(),
        created_at: if view.tool.created_at == 0 {
            String::new()
        } else {
            rfc3339(view.tool.created_at)
        },
        site_required: m.site_required,
        site_set: view.tool.site_set,
    }
}

fn invocation_message(r: InvocationRecord) -> pb::Invocation {
    pb::Invocation {
        id: r.id,
        tool_id: r.tool_id,
        action: r.action,
        subject: r.subject,
        session_id: r.session_id,
        outcome: r.outcome,
        status: r.status,
        duration_ms: u64::try_from(r.duration_ms).unwrap_or(0),
        cost_micros: r.cost_micros,
        created_at: rfc3339(r.created_at),
        approved_by: r.approved_by,
    }
}

#[tonic::async_trait]
impl ToolService for ToolGrpc {
    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        let principal = caller(&request)?;
        let ready_only = request.get_ref().ready_only;
        let invoker = &self.invoker;
        let tools = invoker
            .registry
            .list(&principal, |m, credential_set, site_set| {
                // Cheap checks first: what it runs is looked for on disk.
                !ready_only
                    || (ready(m, credential_set, site_set, false)
                        && invoker.unavailable(m).is_none())
            })
            .await?;
        Ok(Response::new(pb::ListToolsResponse {
            tools: tools
                .into_iter()
                .map(|t| tool_message(&self.invoker, t))
                .collect(),
        }))
    }

    async fn get_tool(
        &self,
        request: Request<pb::GetToolRequest>,
    ) -> Result<Response<pb::Tool>, Status> {
        let principal = caller(&request)?;
        let view = self
            .invoker
            .registry
            .get(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(tool_message(&self.invoker, view)))
    }

    async fn create_tool(
        &self,
        request: Request<pb::CreateToolRequest>,
    ) -> Result<Response<pb::Tool>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let rate_limit_per_minute = Some(r.rate_limit_per_minute).filter(|n| *n > 0);
        let timeout = Some(r.timeout_ms)
            .filter(|n| *n > 0)
            .map(Duration::from_millis);
        let view = match (r.openapi_json.is_empty(), r.mcp_url.is_empty()) {
            (true, true) if r.browser && !r.sandbox => {
                self.invoker
                    .enable_browser(&principal, &r.id, timeout, r.price_micros)
                    .await?
            }
            (true, true) if r.sandbox => {
                self.invoker
                    .enable_sandboxed(
                        &principal,
                        &r.id,
                        &r.sandbox_runner,
                        crate::domain::manifest::SandboxPolicy {
                            network: r.sandbox_network,
                            allow_hosts: r.sandbox_allow_hosts,
                        },
                        timeout,
                        r.price_micros,
                    )
                    .await?
            }
            (false, true) if !r.sandbox => {
                let asked = NewHttpTool {
                    id: r.id,
                    openapi_json: r.openapi_json,
                    base_url: Some(r.base_url).filter(|u| !u.is_empty()),
                    rate_limit_per_minute,
                    timeout,
                    price_micros: r.price_micros,
                    requires_approval: r.requires_approval,
                };
                self.invoker.registry.create(&principal, asked).await?
            }
            (true, false) if !r.sandbox => {
                let asked = NewMcpTool {
                    id: r.id,
                    url: r.mcp_url,
                    credential: r.credential,
                    rate_limit_per_minute,
                    timeout,
                    price_micros: r.price_micros,
                    requires_approval: r.requires_approval,
                };
                self.invoker.mount(&principal, asked).await?
            }
            _ => {
                return Err(ApiError::validation(
                    "openapi",
                    "give one of an OpenAPI document, an MCP server's URL (mcp.url) or sandbox",
                )
                .into());
            }
        };
        Ok(Response::new(tool_message(&self.invoker, view)))
    }

    async fn delete_tool(
        &self,
        request: Request<pb::GetToolRequest>,
    ) -> Result<Response<pb::DeleteToolResponse>, Status> {
        let principal = caller(&request)?;
        self.invoker
            .registry
            .delete(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(pb::DeleteToolResponse {}))
    }

    async fn put_credential(
        &self,
        request: Request<pb::PutCredentialRequest>,
    ) -> Result<Response<pb::CredentialResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let credential_set = self
            .invoker
            .registry
            .put_credential(&principal, &r.id, &r.credential, &r.base_url)
            .await?;
        Ok(Response::new(pb::CredentialResponse { credential_set }))
    }

    async fn delete_credential(
        &self,
        request: Request<pb::GetToolRequest>,
    ) -> Result<Response<pb::CredentialResponse>, Status> {
        let principal = caller(&request)?;
        self.invoker
            .registry
            .delete_credential(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(pb::CredentialResponse {
            credential_set: false,
        }))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let principal = caller(&request)?;
        let bearer = bearer_of(&request).unwrap_or_default().to_owned();
        let r = request.into_inner();
        let call = Call {
            tool: r.tool_id,
            action: r.action,
            arguments_json: r.arguments_json,
            session_id: r.session_id,
            approved_by: r.approved_by,
            idempotency_key: r.idempotency_key,
        };
        let answered = self.invoker.invoke(&principal, &bearer, call).await?;
        Ok(Response::new(pb::InvokeResponse {
            invocation_id: answered.invocation_id,
            status: u32::from(answered.status),
            result_json: answered.result.to_string(),
            duration_ms: u64::try_from(answered.duration.as_millis()).unwrap_or(u64::MAX),
            cost_micros: answered.cost_micros,
        }))
    }

    async fn list_invocations(
        &self,
        request: Request<pb::ListInvocationsRequest>,
    ) -> Result<Response<pb::ListInvocationsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let page = r.page.unwrap_or_default();
        if page.cursor.len() > 64 {
            return Err(ApiError::validation("cursor", "is not a cursor of this list").into());
        }
        let size = PageSize::clamped(page.limit, 200);
        let (rows, next) = self
            .invoker
            .list(&principal, &r.tool_id, &page.cursor, size)
            .await?;
        Ok(Response::new(pb::ListInvocationsResponse {
            invocations: rows.into_iter().map(invocation_message).collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }
}
