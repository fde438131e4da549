//! Invoking a tool's action for a caller: arguments checked against the schema, the
//! caller's capability, the tenant's and the action's rate limits, one policy decision
//! on the call (a deny is final), the tenant's credential opened only for the request,
//! the request under the action's timeout, then the invocation log, an `agent.audit`
//! record and a `billing.usage` event at the tool's price (both through the outbox).

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use somagent_common::audit::{AuditRecord, Outcome};
use somagent_common::auth::grpc::with_bearer;
use somagent_common::auth::{Capability, Principal, ServiceTokens};
use somagent_common::budget_holds::{BudgetHolds, CallFor, MostCost};
use somagent_common::clock::{unix_now, unix_now_ms};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::grpc_channel::Channel;
use somagent_common::infra::cache::Cache;
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::paging::PageSize;
use somagent_common::proto::memory::v1 as mpb;
use somagent_common::proto::memory::v1::memory_service_client::MemoryServiceClient;
use somagent_common::proto::policy::v1 as ppb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::service::{MEMORY, POLICY};

use crate::access::{self, Access};
use crate::config::ToolConfig;
use crate::domain::arguments::ArgumentSchema;
use crate::domain::credentials::{AwsKeys, Credential};
use crate::domain::manifest::{
    Action, AuthScheme, MAX_PAGES, MAX_PAGES_ARGUMENT, Pagination, ToolManifest,
};
use crate::domain::paging::{self, Page};
use crate::domain::request::{self, PreparedRequest};
use crate::domain::signing;
use crate::mcp_client::{self, Called};
use crate::sandbox::{self, Sandbox};
use crate::store::InvocationRecord;
use crate::tools::{Registry, credential_binding};
use somagent_common::egress;

/// A call a caller asks for.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub action: String,
    pub arguments_json: String,
    pub session_id: String,
    /// Who approved the call inside a session turn (trusted from the orchestrator only).
    pub approved_by: String,
    /// Repeats of a call with the same key within a day get its first answer.
    pub idempotency_key: String,
}

/// The service whose word on an approval counts: it asked a person inside a turn.
const APPROVER: &str = "service:orchestrator";
/// The most of an MCP tool's error text passed on.
const MAX_TOOL_ERROR: usize = 2048;

/// What a call brought back: an HTTP answer (an MCP result is given as one), or an MCP
/// tool's own error.
enum Reply {
    Page(Page),
    ToolError(String),
}

/// The longest a call waits for a rate-limited API that says to come back; longer, and
/// the caller is told to retry.
const RETRY_WAIT: Duration = Duration::from_secs(5);
/// How long the answer of an idempotent call is kept for its repeats.
const ANSWER_KEPT: Duration = Duration::from_secs(24 * 3600);

/// What a call that ran brought back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Answered {
    pub invocation_id: String,
    pub status: u16,
    pub result: Value,
    pub duration: Duration,
    pub cost_micros: i64,
}

pub struct Invoker {
    pub registry: Registry,
    pub cache: Cache,
    pub policy: PolicyServiceClient<Channel>,
    pub tokens: ServiceTokens,
    pub http: reqwest::Client,
    pub config: ToolConfig,
    /// Where code and command-line tools run.
    pub sandbox: std::sync::Arc<Sandbox>,
    pub schemas: SchemaCache,
    /// Tokens obtained with cloud credentials, and clusters' clients.
    pub access: Access,
    /// The headless browser the browser tool drives.
    pub browser: crate::browser::Browser,
    /// The memory service, which the memory tool calls as the user.
    pub memory: MemoryServiceClient<Channel>,
    /// The budgets priced calls are held against.
    pub budgets: BudgetHolds,
}

/// Compiled argument schemas by their text: compiling one costs far more than the rest
/// of a call's checks, and the same few are used again and again.
#[derive(Default)]
pub struct SchemaCache {
    compiled: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<ArgumentSchema>>>,
}

impl SchemaCache {
    /// The most schemas kept; past it the cache starts over.
    const MAX: usize = 4096;

    fn compiled(&self, schema: &Value) -> Result<std::sync::Arc<ArgumentSchema>, ApiError> {
        let key = schema.to_string();
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let compiled = std::sync::Arc::new(
            ArgumentSchema::compile(schema)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("a stored tool schema: {e}")))?,
        );
        let mut cache = self.lock();
        if cache.len() >= Self::MAX {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::sync::Arc<ArgumentSchema>>>
    {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The HTTP client tools call through: no redirects followed (a redirect could carry
/// a credential elsewhere) and, unless the operator allows it, public addresses only.
pub fn http_client(config: &ToolConfig) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(config.allow_private_networks).build()?)
}

/// The settings every client a tool calls through has (see [`http_client`]).
pub fn client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("somagent-tool/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // A proxy from the environment would resolve names itself, past the guard.
        .no_proxy();
    if !allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(egress::PublicOnly));
    }
    builder
}

/// How a call reaches its API (see [`Invoker::route`]).
struct Route<'a> {
    client: reqwest::Client,
    bearer: Option<String>,
    /// The bearer token was obtained with a cloud credential (and may be renewed).
    bearer_obtained: bool,
    aws: Option<(&'a AwsKeys, &'a str)>,
}

/// How an invocation ended, as the log and the audit record say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Ok,
    Denied,
    Failed,
    Timeout,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

impl Invoker {
    pub async fn invoke(
        &self,
        principal: &Principal,
        bearer: &str,
        call: Call,
    ) -> Result<Answered, ApiError> {
        principal.require(Capability::ToolsInvoke)?;
        let tool = self.registry.find(&principal.tenant, &call.tool).await?;
        let manifest = &tool.manifest;
        let action = manifest
            .action(&call.action)
            .ok_or_else(|| ApiError::not_found("action"))?;
        let needed = Capability::parse(&action.capability).unwrap_or(Capability::ToolsInvoke);
        principal.require(needed)?;
        let arguments: Map<String, Value> =
            match serde_json::from_str::<Value>(if call.arguments_json.is_empty() {
                "{}"
            } else {
                &call.arguments_json
            }) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(ApiError::validation("arguments", "is a JSON object")),
                Err(e) => {
                    return Err(ApiError::validation(
                        "arguments",
                        format!("is not JSON: {e}"),
                    ));
                }
            };
        let schema = self.schemas.compiled(&action.parameters)?;
        schema
            .check(&Value::Object(arguments.clone()))
            .map_err(|e| {
                let field = if e.field == "arguments" {
                    e.field
                } else {
                    format!("arguments.{}", e.field)
                };
                ApiError::validation(&field, e.message)
            })?;
        let approved = !call.approved_by.is_empty() && principal.actor.as_deref() == Some(APPROVER);
        if action.requires_approval && !approved {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this action runs only after a person approves it, inside a session turn",
            )
            .with_details(json!({"requires_approval": true})));
        }
        if manifest.site_required && !tool.site_set {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the tool `{}` is served per customer: set where yours is",
                    manifest.id
                ),
            )
            .with_details(json!({
                "missing": "base_url",
                "set_with": format!("PUT /v1/tools/{}/credentials", manifest.id),
            })));
        }
        let answer_key = (!call.idempotency_key.is_empty()).then(|| {
            format!(
                "tool-answer:{}:{}:{}:{}",
                principal.tenant, manifest.id, action.name, call.idempotency_key
            )
        });
        if let Some(key) = &answer_key
            && let Some(answer) = self.earlier_answer(key).await
        {
            return Ok(answer);
        }
        let credential = if manifest.auth.needs_credential() {
            let sealed = self
                .registry
                .store
                .credential(&principal.tenant, &manifest.id)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "the tool `{}` has no credential set for this tenant",
                            manifest.id
                        ),
                    )
                    .with_details(json!({
                        "missing": "credential",
                        "set_with": format!("PUT /v1/tools/{}/credentials", manifest.id),
                    }))
                })?;
            let opened = self
                .registry
                .sealer
                .open_text(
                    &sealed,
                    &credential_binding(&principal.tenant, &manifest.id),
                )
                .map_err(|e| {
                    ApiError::internal(anyhow::anyhow!("a tool credential does not open: {e}"))
                })?;
            Some(opened)
        } else {
            None
        };
        self.within_limits(
            principal,
            &manifest.id,
            &action.name,
            action.rate_limit_per_minute,
        )
        .await?;

        let invocation_id = uuid::Uuid::now_v7().to_string();
        let mut record = InvocationRecord {
            id: invocation_id.clone(),
            tool_id: manifest.id.clone(),
            action: action.name.clone(),
            subject: principal.subject.clone(),
            session_id: call.session_id.clone(),
            outcome: String::new(),
            status: 0,
            duration_ms: 0,
            cost_micros: 0,
            created_at: unix_now(),
            approved_by: if approved {
                call.approved_by.clone()
            } else {
                String::new()
            },
        };
        if let Err(denied) = self
            .decide(
                principal,
                bearer,
                &manifest.id,
                &action.name,
                &arguments,
                &call.session_id,
            )
            .await
        {
            self.finish(principal, &mut record, Ended::Denied, 0, Duration::ZERO, 0)
                .await;
            return Err(denied);
        }
        // A priced tool's call is held against the tenant's money budgets first.
        let hold = if action.price_micros > 0 {
            let most = MostCost {
                call_id: invocation_id.clone(),
                tokens: 0,
                micros: action.price_micros,
                currency: "USD".into(),
                ttl: (action.timeout * 2).max(Duration::from_secs(60)),
            };
            let call_for = CallFor {
                tenant: &principal.tenant,
                subject: &principal.subject,
                capabilities: &[Capability::ToolsInvoke],
            };
            Some(self.budgets.reserve(&call_for, &most).await?)
        } else {
            None
        };
        let outcome = async {
            // How many pages to read is the platform's argument, not the API's.
            let mut arguments = arguments;
            let pages = match arguments.remove(MAX_PAGES_ARGUMENT) {
                Some(n) if action.http.paginated => n.as_u64().unwrap_or(1).clamp(1, MAX_PAGES),
                Some(other) => {
                    arguments.insert(MAX_PAGES_ARGUMENT.into(), other);
                    1
                }
                None => 1,
            };
            let secret = credential.as_deref().map(String::as_str);
            let started = Instant::now();
            let sent = if let Some(policy) = &manifest.sandbox {
                let runner = action.remote.as_deref().unwrap_or_default();
                let terraform = crate::domain::code::find_terraform();
                if let Some(why) = self.unavailable(manifest) {
                    return Err(ApiError::new(ErrorCode::Unavailable, why));
                }
                let run = crate::domain::code::prepare_run(runner, &arguments, terraform)
                    .map_err(|e| ApiError::validation("arguments", e))?;
                let limits = sandbox::Limits {
                    timeout: action.timeout,
                    cpu_seconds: action.timeout.as_secs().max(1),
                    memory_bytes: self.config.sandbox_memory_mb.saturating_mul(1 << 20),
                    output_bytes: self.config.sandbox_output_bytes,
                    file_bytes: 64 << 20,
                };
                self.sandbox.ready().map_err(|missing| {
                    ApiError::new(
                        ErrorCode::Unavailable,
                        "code cannot run here: the sandbox cannot isolate it",
                    )
                    .with_details(json!({"missing": missing}))
                })?;
                let ran = self
                    .sandbox
                    .run(
                        &run.program,
                        &run.args,
                        &run.files,
                        run.stdin.as_bytes(),
                        policy.egress(),
                        &limits,
                    )
                    .await;
                Ok(ran.map(|ran| {
                    Reply::Page(Page {
                        status: 200,
                        body: serde_json::to_value(&ran).unwrap_or_default(),
                        link: None,
                        retry_after: None,
                    })
                }))
            } else if manifest.browser {
                if let Some(why) = self.unavailable(manifest) {
                    return Err(ApiError::new(ErrorCode::Unavailable, why));
                }
                let remote = action.remote.as_deref().unwrap_or(&action.name);
                let operation = crate::domain::browser::operation(remote, &arguments)
                    .map_err(|e| ApiError::validation("arguments", e))?;
                let max_text = self.config.max_response_bytes;
                tokio::time::timeout(action.timeout, self.browser.run(&operation, max_text))
                    .await
                    .map(|ran| {
                        ran.map(|body| {
                            Reply::Page(Page {
                                status: 200,
                                body,
                                link: None,
                                retry_after: None,
                            })
                        })
                    })
            } else if manifest.memory {
                let remote = action.remote.as_deref().unwrap_or(&action.name);
                let asked =
                    crate::domain::memory_tool::call(remote, &arguments, &call.session_id, || {
                        format!("note-{}", uuid::Uuid::now_v7().simple())
                    })
                    .map_err(|e| ApiError::validation("arguments", e))?;
                tokio::time::timeout(
                    action.timeout,
                    self.memory_call(principal, bearer, &call.session_id, asked),
                )
                .await
            } else if manifest.mcp {
                let endpoint = self.mcp_endpoint(&manifest.base_url, secret, action.timeout)?;
                let remote = action.remote.as_deref().unwrap_or(&action.name);
                tokio::time::timeout(
                    action.timeout,
                    mcp_client::call(&endpoint, remote, arguments),
                )
                .await
                .map(|called| {
                    called.map(|c| match c {
                        Called::Ok(body) => Reply::Page(Page {
                            status: 200,
                            body,
                            link: None,
                            retry_after: None,
                        }),
                        Called::ToolError(text) => Reply::ToolError(text),
                    })
                })
            } else {
                let opened = secret
                    .map(|text| Credential::read(&manifest.auth, text))
                    .transpose()
                    .map_err(|e| {
                        ApiError::new(
                            ErrorCode::Conflict,
                            format!(
                                "the tool's credential cannot be used: {} {}",
                                e.field, e.message
                            ),
                        )
                        .with_details(json!({
                            "field": e.field,
                            "set_with": format!("PUT /v1/tools/{}/credentials", manifest.id),
                        }))
                    })?;
                let variables = opened
                    .as_ref()
                    .map(Credential::variables)
                    .unwrap_or_default();
                let base_url = match &opened {
                    Some(Credential::Kube(access)) => access.server.as_str(),
                    _ => manifest.base_url.as_str(),
                };
                let target = request::Target {
                    base_url,
                    auth: &manifest.auth,
                    headers: &manifest.headers,
                    variables: &variables,
                };
                let key = access::credential_key(
                    principal.tenant.as_str(),
                    &manifest.id,
                    secret.unwrap_or_default(),
                );
                // Checked before anything is sent (a token obtained included): the arguments
                // make a request (else a 422), to an address tools may reach (else a 403).
                let checked = request::prepare(&target, &action.http, &arguments, Some(""))
                    .map_err(|e| ApiError::validation("arguments", e))?;
                if !self.config.allow_private_networks {
                    egress::check_literal(&checked.url)
                        .map_err(|e| ApiError::new(ErrorCode::Forbidden, e))?;
                }
                let pagination = action
                    .http
                    .paginated
                    .then_some(manifest.pagination.as_ref())
                    .flatten();
                let deadline = started + action.timeout;
                let run = async {
                    let route = self.route(manifest, action, opened.as_ref(), &key).await?;
                    let prepared = request::prepare(
                        &target,
                        &action.http,
                        &arguments,
                        route.bearer.as_deref(),
                    )?;
                    if !self.config.allow_private_networks {
                        egress::check_literal(&prepared.url)?;
                    }
                    let page = self
                        .read_pages(&route, prepared, pagination, pages, deadline)
                        .await?;
                    if page.status == 401 && route.bearer_obtained {
                        // A token the API no longer takes (revoked, rotated) is not reused.
                        self.access.forget(&key);
                    }
                    Ok::<_, String>(page)
                };
                tokio::time::timeout(action.timeout, run)
                    .await
                    .map(|read| read.map(Reply::Page))
            };
            let took = started.elapsed();
            match sent {
                Err(_) => {
                    self.finish(principal, &mut record, Ended::Timeout, 0, took, 0)
                        .await;
                    Err(ApiError::new(
                        ErrorCode::Timeout,
                        format!(
                            "the tool did not answer within {} ms",
                            action.timeout.as_millis()
                        ),
                    ))
                }
                Ok(Err(reason)) => {
                    self.finish(principal, &mut record, Ended::Failed, 0, took, 0)
                        .await;
                    Err(ApiError::new(
                        ErrorCode::UpstreamFailed,
                        format!("the tool could not be reached: {reason}"),
                    ))
                }
                Ok(Ok(Reply::ToolError(text))) => {
                    self.finish(principal, &mut record, Ended::Failed, 0, took, 0)
                        .await;
                    // A tool's own error is written for its caller (MCP's `isError`, the
                    // memory tool's refusal).
                    let said = &text[..text.floor_char_boundary(MAX_TOOL_ERROR)];
                    Err(
                        ApiError::new(ErrorCode::UpstreamFailed, "the tool reported an error")
                            .with_details(json!({"tool_error": said})),
                    )
                }
                Ok(Ok(Reply::Page(Page {
                    status: 429,
                    retry_after,
                    ..
                }))) => {
                    self.finish(principal, &mut record, Ended::Failed, 429, took, 0)
                        .await;
                    let mut limited = ApiError::new(
                        ErrorCode::RateLimited,
                        "the tool's API is limiting this tenant's calls",
                    )
                    .with_details(json!({"status": 429}));
                    limited.retry_after = Some(retry_after.map_or(60, |d| d.as_secs().max(1)));
                    Err(limited)
                }
                Ok(Ok(Reply::Page(Page { status, .. }))) if !(200..300).contains(&status) => {
                    self.finish(principal, &mut record, Ended::Failed, status, took, 0)
                        .await;
                    // The upstream's body is not passed on: it may echo the credential.
                    Err(ApiError::new(
                        ErrorCode::UpstreamFailed,
                        format!("the tool answered with HTTP {status}"),
                    )
                    .with_details(json!({"status": status})))
                }
                Ok(Ok(Reply::Page(Page {
                    status,
                    body: result,
                    ..
                }))) => {
                    let price = action.price_micros;
                    self.finish(principal, &mut record, Ended::Ok, status, took, price)
                        .await;
                    let answered = Answered {
                        invocation_id,
                        status,
                        result,
                        duration: took,
                        cost_micros: price,
                    };
                    if let Some(key) = &answer_key {
                        self.keep_answer(key, &answered).await;
                    }
                    Ok(answered)
                }
            }
        }
        .await;
        if let Some(hold) = hold {
            match &outcome {
                Ok(answered) => self.budgets.settle(hold, 0, answered.cost_micros).await,
                Err(_) => self.budgets.release(hold).await,
            }
        }
        outcome
    }

    /// The answer an earlier call with the same idempotency key got, if it is kept.
    async fn earlier_answer(&self, key: &str) -> Option<Answered> {
        match self.cache.get(key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "an earlier tool answer cannot be looked up");
                None
            }
        }
    }

    async fn keep_answer(&self, key: &str, answered: &Answered) {
        let Ok(bytes) = serde_json::to_vec(answered) else {
            return;
        };
        if let Err(e) = self.cache.set(key, &bytes, Some(ANSWER_KEPT)).await {
            tracing::warn!(error = %e, "a tool answer cannot be kept for its repeats");
        }
    }

    /// The tenant's limit over all its tools, then the action's own.
    async fn within_limits(
        &self,
        principal: &Principal,
        tool: &str,
        action: &str,
        per_minute: u32,
    ) -> Result<(), ApiError> {
        let minute = unix_now() / 60;
        let limits = [
            (
                format!("tool-rate:{}:{minute}", principal.tenant),
                self.config.rate_limit_tenant,
            ),
            (
                format!("tool-rate:{}:{tool}:{action}:{minute}", principal.tenant),
                per_minute,
            ),
        ];
        for (key, limit) in limits {
            if limit == 0 {
                continue;
            }
            let used = self
                .cache
                .incr(&key, 1, Duration::from_secs(61))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "tool rate limits cannot be checked");
                    ApiError::new(
                        ErrorCode::Unavailable,
                        "rate limits cannot be checked right now",
                    )
                })?;
            if used > i64::from(limit) {
                let wait = 60 - u64::try_from(unix_now() % 60).unwrap_or(0);
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("at most {limit} calls a minute"),
                )
                .retry_after(wait.max(1)));
            }
        }
        Ok(())
    }

    /// A memory tool call, made of the memory service as the user: their own token
    /// when they called, else one for memory with no more than they hold of
    /// `memory:read` and `memory:write`. The memory service's refusal (a 404, a 422) is
    /// what the agent is told.
    async fn memory_call(
        &self,
        principal: &Principal,
        bearer: &str,
        session_id: &str,
        asked: crate::domain::memory_tool::MemoryCall,
    ) -> Result<Reply, String> {
        use crate::domain::memory_tool::MemoryCall;
        let token = if principal.actor.is_none() {
            bearer.to_owned()
        } else {
            let held: Vec<String> = [Capability::MemoryRead, Capability::MemoryWrite]
                .into_iter()
                .filter(|c| principal.can(*c))
                .map(|c| c.as_str().to_owned())
                .collect();
            self.tokens
                .for_user(&MEMORY, &principal.tenant, &principal.subject, &held)
                .await
                .map_err(|status| status.message().to_owned())?
        };
        let mut memory = self.memory.clone();
        let answered = match asked {
            MemoryCall::Remember { scope, key, text } => memory
                .put_memory(with_bearer(
                    &token,
                    tonic::Request::new(mpb::PutMemoryRequest {
                        scope,
                        key,
                        text,
                        ..Default::default()
                    }),
                ))
                .await
                .map(|m| {
                    let m = m.into_inner();
                    json!({"remembered": {"scope": m.scope, "key": m.key}})
                }),
            MemoryCall::Recall { query, top_k } => memory
                .search(with_bearer(
                    &token,
                    tonic::Request::new(mpb::SearchRequest {
                        query,
                        top_k,
                        session_id: session_id.to_owned(),
                        ..Default::default()
                    }),
                ))
                .await
                .map(|found| {
                    let results: Vec<Value> = found
                        .into_inner()
                        .hits
                        .into_iter()
                        .map(|h| {
                            if h.kind == "memory" {
                                json!({"memory": {"scope": h.scope, "key": h.key}, "text": h.text})
                            } else {
                                json!({"document": {"id": h.document_id, "title": h.title, "section": h.section, "position": h.position}, "text": h.text})
                            }
                        })
                        .collect();
                    json!({"results": results})
                }),
            MemoryCall::Forget { scope, key } => memory
                .delete_memory(with_bearer(
                    &token,
                    tonic::Request::new(mpb::MemoryRef { scope, key: key.clone() }),
                ))
                .await
                .map(|_| json!({"forgotten": key})),
        };
        match answered {
            Ok(body) => Ok(Reply::Page(Page {
                status: 200,
                body,
                link: None,
                retry_after: None,
            })),
            Err(status) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Internal => Err(format!("memory: {}", status.message())),
                // What the agent asked for cannot be done: it is told why.
                _ => Ok(Reply::ToolError(status.message().to_owned())),
            },
        }
    }

    /// Policy's decision on the call; a deny is final.
    async fn decide(
        &self,
        principal: &Principal,
        bearer: &str,
        tool: &str,
        action: &str,
        arguments: &Map<String, Value>,
        session_id: &str,
    ) -> Result<(), ApiError> {
        let token = if principal.actor.is_none() {
            bearer.to_owned()
        } else {
            self.tokens
                .for_user(
                    &POLICY,
                    &principal.tenant,
                    &principal.subject,
                    &[Capability::PolicyRead.as_str().to_owned()],
                )
                .await
                .map_err(ApiError::from)?
        };
        let question = ppb::EvaluateRequest {
            action: "tool".into(),
            text: Value::Object(arguments.clone()).to_string(),
            tool: format!("{tool}.{action}"),
            session_id: session_id.to_owned(),
        };
        let decision = self
            .policy
            .clone()
            .evaluate(with_bearer(&token, tonic::Request::new(question)))
            .await
            .map_err(|status| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    "policy cannot decide on this call right now",
                )
                .with_details(json!({"cause": ApiError::from(status).code.as_str()}))
            })?
            .into_inner();
        if decision.allowed {
            return Ok(());
        }
        Err(
            ApiError::new(ErrorCode::Forbidden, "policy denied this tool call").with_details(
                json!({
                    "reasons": decision.reasons,
                    "rule_ids": decision.rule_ids,
                    "severity": decision.severity,
                }),
            ),
        )
    }

    /// Where the MCP server mounted at `url` is reached: over Streamable HTTP (public
    /// addresses only unless the operator allows private ones), or a `stdio:<name>`
    /// server the operator configured, started in the sandbox for up to `timeout`.
    pub fn mcp_endpoint<'a>(
        &'a self,
        url: &'a str,
        credential: Option<&'a str>,
        timeout: Duration,
    ) -> Result<mcp_client::Endpoint<'a>, ApiError> {
        if let Some(name) = url.strip_prefix(mcp_client::STDIO) {
            let server = self.config.mcp_commands.get(name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the operator no longer allows the MCP server `{name}`"),
                )
            })?;
            self.sandbox.ready().map_err(|missing| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    "MCP servers over stdio cannot run here: the sandbox cannot isolate them",
                )
                .with_details(json!({"missing": missing}))
            })?;
            return Ok(mcp_client::Endpoint::Stdio {
                sandbox: &self.sandbox,
                server,
                credential,
                limits: sandbox::Limits {
                    timeout,
                    cpu_seconds: timeout.as_secs().max(1) + 5,
                    memory_bytes: self.config.sandbox_memory_mb.saturating_mul(1 << 20),
                    output_bytes: self.config.sandbox_output_bytes,
                    file_bytes: 64 << 20,
                },
            });
        }
        if !self.config.allow_private_networks {
            let parsed = url::Url::parse(url)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("a stored MCP URL: {e}")))?;
            egress::check_literal(&parsed).map_err(|e| ApiError::new(ErrorCode::Forbidden, e))?;
        }
        Ok(mcp_client::Endpoint::Http {
            http: &self.http,
            url,
            bearer: credential,
        })
    }

    /// Why a tool cannot run on this platform, if it cannot: its CLI or its browser is
    /// not installed.
    pub fn unavailable(&self, manifest: &ToolManifest) -> Option<String> {
        if manifest.browser {
            return self.browser.unavailable();
        }
        crate::domain::code::unavailable(manifest, crate::domain::code::find_terraform)
    }

    /// How a call reaches the tool's API: the client (a cluster's own, for a
    /// kubeconfig), the bearer token (the tenant's, or one obtained with its cloud
    /// credential), and for AWS the keys and service its requests are signed for.
    async fn route<'a>(
        &self,
        manifest: &'a ToolManifest,
        action: &'a Action,
        credential: Option<&'a Credential>,
        key: &str,
    ) -> Result<Route<'a>, String> {
        let mut route = Route {
            client: self.http.clone(),
            bearer: None,
            bearer_obtained: false,
            aws: None,
        };
        match (&manifest.auth, credential) {
            (
                AuthScheme::AzureClientCredentials { token_url, scope },
                Some(Credential::Azure(app)),
            ) => {
                route.bearer = Some(
                    self.access
                        .azure_token(&self.http, key, app, token_url, scope)
                        .await?,
                );
                route.bearer_obtained = true;
            }
            (AuthScheme::GoogleServiceAccount { scope }, Some(Credential::Google(account))) => {
                route.bearer = Some(
                    self.access
                        .google_token(&self.http, key, account, scope)
                        .await?,
                );
                route.bearer_obtained = true;
            }
            (AuthScheme::Kubeconfig, Some(Credential::Kube(cluster))) => {
                route.client = self.access.kube_client(key, cluster)?;
                route.bearer.clone_from(&cluster.token);
            }
            (AuthScheme::AwsSigV4, Some(Credential::Aws(keys))) => {
                let service = action.http.service.as_deref().unwrap_or_default();
                route.aws = Some((keys, service));
            }
            (_, Some(Credential::Secret(secret))) => route.bearer = Some(secret.clone()),
            _ => {}
        }
        Ok(route)
    }

    /// Reads up to `pages` pages of a list (one for any other action), joined, from
    /// the first request on. A page the API refuses for its rate limit is asked again
    /// once when it says to wait a little (`Retry-After`), before `deadline`.
    async fn read_pages(
        &self,
        route: &Route<'_>,
        first: PreparedRequest,
        pagination: Option<&Pagination>,
        pages: u64,
        deadline: Instant,
    ) -> Result<Page, String> {
        let origin = first.url.origin();
        let mut request = first;
        let mut joined = self.send_patiently(route, &request, deadline).await?;
        for _ in 1..pages {
            if !(200..300).contains(&joined.status) {
                break;
            }
            let Some(pagination) = pagination else { break };
            let Some(next) = paging::next_request(&request, &joined, pagination) else {
                break;
            };
            // A next page elsewhere would take the credential with it.
            if next.url.origin() != origin {
                break;
            }
            let page = self.send_patiently(route, &next, deadline).await?;
            if !(200..300).contains(&page.status) {
                break;
            }
            paging::join(&mut joined, page, pagination);
            request = next;
        }
        Ok(joined)
    }

    /// Sends a request; a 429 (or GitHub's 403 with no requests left) that says to wait
    /// at most [`RETRY_WAIT`], within the deadline, is sent once more after the wait.
    async fn send_patiently(
        &self,
        route: &Route<'_>,
        request: &PreparedRequest,
        deadline: Instant,
    ) -> Result<Page, String> {
        let page = self.send(route, request).await?;
        if page.status != 429 {
            return Ok(page);
        }
        match page.retry_after {
            Some(wait) if wait <= RETRY_WAIT && Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
                self.send(route, request).await
            }
            _ => Ok(page),
        }
    }

    /// Sends the request: the status, the answer (JSON, or its text under `text`, cut
    /// at the configured size), its `Link` and how long it says to wait.
    async fn send(&self, route: &Route<'_>, prepared: &PreparedRequest) -> Result<Page, String> {
        let method =
            reqwest::Method::from_bytes(prepared.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut builder = route.client.request(method, prepared.url.clone());
        for (name, value) in &prepared.headers {
            builder = builder.header(name, value);
        }
        if let Some((keys, service)) = route.aws {
            // Signed as sent: each page of a list has its own signature.
            let signed =
                signing::aws_headers(prepared, keys, service, std::time::SystemTime::now())?;
            for (name, value) in signed {
                builder = builder.header(name, value);
            }
        }
        if let Some((bytes, media)) = prepared.encoded_body() {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, media)
                .body(bytes);
        }
        let mut response = builder.send().await.map_err(|e| describe(&e))?;
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut status = response.status().as_u16();
        // GitHub says "no requests left" with a 403 and a zero remaining count.
        if status == 403 && header("x-ratelimit-remaining").as_deref() == Some("0") {
            status = 429;
        }
        let retry_after = paging::retry_after(
            header("retry-after").as_deref(),
            header("x-ratelimit-reset").as_deref(),
            somagent_common::clock::unix_now(),
        );
        let link = header("link");
        let xml = header("content-type").is_some_and(|t| t.contains("xml"));
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            let room = self.config.max_response_bytes.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        let body = serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&bytes);
            xml.then(|| crate::domain::xml::to_json(&text).ok())
                .flatten()
                .unwrap_or_else(|| json!({"text": text}))
        });
        Ok(Page {
            status,
            body,
            link,
            retry_after,
        })
    }

    /// Logs the invocation and puts its audit record and (when it cost something) its
    /// usage in the outbox.
    async fn finish(
        &self,
        principal: &Principal,
        record: &mut InvocationRecord,
        ended: Ended,
        status: u16,
        took: Duration,
        cost_micros: i64,
    ) {
        record.outcome = ended.as_str().into();
        record.status = u32::from(status);
        record.duration_ms = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
        record.cost_micros = cost_micros;
        let tenant = &principal.tenant;
        let audit = AuditRecord::by("tool", "tool.invoked", principal)
            .on("tool", Some(&record.tool_id))
            .action(record.action.clone())
            .outcome(match ended {
                Ended::Ok => Outcome::Success,
                Ended::Denied => Outcome::Denied,
                Ended::Failed | Ended::Timeout => Outcome::Failure,
            })
            .with("invocation_id", &record.id)
            .with("result", ended.as_str())
            .with("status", status)
            .with("duration_ms", record.duration_ms)
            .with("approved_by", &record.approved_by);
        let audit = audit.envelope();
        let usage = (ended == Ended::Ok).then(|| {
            Envelope::new(
                "tool.usage",
                "tool",
                tenant.clone(),
                json!({
                    "call_id": record.id,
                    "user": record.subject,
                    "session_id": Some(&record.session_id).filter(|s| !s.is_empty()),
                    "tool": record.tool_id,
                    "action": record.action,
                    // A tool's price is per call, in the platform's currency.
                    "price_micros": cost_micros,
                    "cost_micros": cost_micros,
                    "currency": "USD",
                    "at_ms": unix_now_ms(),
                }),
            )
            .with_subject(principal.subject.clone())
        });
        let mut events = vec![(topics::AUDIT, tenant.as_str(), &audit)];
        if let Some(usage) = &usage {
            events.push((topics::BILLING_USAGE, tenant.as_str(), usage));
        }
        // The log row, the audit record and the usage event commit together: one
        // commit on the call's path.
        let store = &self.registry.store;
        let written = async {
            let mut tx = store.begin().await?;
            store.record(&mut tx, tenant, record).await?;
            self.registry.outbox.commit_and_publish(tx, &events).await
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "a tool invocation, its audit record and usage could not be stored");
        }
    }

    /// A page of the invocation log, newest first: tenant admins see everyone's, others
    /// their own.
    pub async fn list(
        &self,
        principal: &Principal,
        tool: &str,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<InvocationRecord>, String), ApiError> {
        principal.require(Capability::ToolsRead)?;
        let subject =
            (!principal.can(Capability::TenantAdmin)).then_some(principal.subject.as_str());
        let rows = self
            .registry
            .store
            .invocations(
                &principal.tenant,
                subject,
                tool,
                cursor,
                size.rows_to_read(),
            )
            .await
            .map_err(ApiError::internal)?;
        Ok(size.cut(rows, |r| r.id.clone()))
    }
}

/// Why a request failed, without its URL (which may carry a credential in the query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "the connection failed".into()
    } else if e.is_timeout() {
        "it timed out".into()
    } else if e.is_body() || e.is_decode() {
        "its answer broke off".into()
    } else {
        "the request failed".into()
    }
}
