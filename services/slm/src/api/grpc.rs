//! slm's gRPC surface: chat (whole or streamed), the models a tenant may use, and the
//! tenant's profiles. Every call verifies the token it carries.

use std::sync::Arc;

use futures::Stream;
use serde_json::Value;
use somagent_common::auth::grpc;
use somagent_common::auth::{Capability, Principal};
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::Usage;
use somagent_common::proto::slm::v1 as pb;
use somagent_common::proto::slm::v1::slm_service_server::SlmService;
use tonic::{Request, Response, Status};

use crate::domain::chat::{ChatCall, Delta, FinishReason, Message, Role, ToolCall};
use crate::domain::profile::Profile;
use crate::metering::Caller;
use crate::model_router::{Answer, ModelRouter, Piece};
use crate::output_rules::OutputRuleSource;
use crate::profiles;

pub struct SlmGrpc {
    pub router: Arc<ModelRouter>,
    pub output_rules: Arc<OutputRuleSource>,
}

impl SlmGrpc {
    /// The request as the router takes it, guarded by the tenant's output rules.
    async fn guarded_call(
        &self,
        principal: &Principal,
        bearer: &str,
        r: pb::ChatRequest,
    ) -> Result<ChatCall, ApiError> {
        let mut call = chat_call(r)?;
        call.output_rules = Some(self.output_rules.for_caller(principal, bearer).await?);
        Ok(call)
    }
}

/// The request as the router takes it; malformed parts and broken rules are 422
/// problems.
fn chat_call(r: pb::ChatRequest) -> Result<ChatCall, ApiError> {
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let role = Role::parse(&m.role).ok_or_else(|| {
            ApiError::validation(
                "messages",
                format!(
                    "message {i} has the unknown role `{}` (system, user, assistant, tool)",
                    m.role.chars().take(20).collect::<String>()
                ),
            )
        })?;
        let mut message = Message::new(role, m.content);
        message.name = Some(m.name).filter(|n| !n.is_empty());
        message.tool_call_id = Some(m.tool_call_id).filter(|n| !n.is_empty());
        message.tool_calls = m
            .tool_calls
            .into_iter()
            .map(tool_call)
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::validation("messages", format!("message {i}: {e}")))?;
        messages.push(message);
    }
    let json = |field: &'static str, raw: String| -> Result<Option<Value>, ApiError> {
        if raw.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&raw)
            .map(Some)
            .map_err(|e| ApiError::validation(field, format!("is not JSON: {e}")))
    };
    let call = ChatCall {
        model: r.model,
        messages,
        tools: json("tools", r.tools_json)?,
        tool_choice: json("tool_choice", r.tool_choice_json)?,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        stop: r.stop,
        seed: r.seed,
        response_format: json("response_format", r.response_format_json)?,
        output_rules: None,
    };
    call.check()?;
    Ok(call)
}

/// A tool call a message says the model made; one without an id or a name could not
/// be answered, nor sent to a model.
fn tool_call(c: pb::ToolCall) -> Result<ToolCall, &'static str> {
    if c.id.is_empty() {
        return Err("a tool call needs an `id`");
    }
    if c.name.is_empty() {
        return Err("a tool call needs `function.name`");
    }
    Ok(ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    })
}

fn tool_call_message(c: ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

/// The chunk that carries `delta` on the answer's `header`. A finish or a usage adds
/// nothing: the last chunk says those, once the call is metered.
fn delta_chunk(header: pb::ChatChunk, delta: Delta) -> pb::ChatChunk {
    match delta {
        Delta::Text(text) => pb::ChatChunk {
            delta: text,
            ..header
        },
        Delta::ToolCall {
            index,
            id,
            name,
            arguments,
        } => pb::ChatChunk {
            tool_calls: vec![pb::ToolCallDelta {
                index,
                id: id.unwrap_or_default(),
                name: name.unwrap_or_default(),
                arguments,
            }],
            ..header
        },
        Delta::Finish { .. } | Delta::Usage(_) => header,
    }
}

fn caller(principal: &Principal, session: &str) -> Result<Caller, ApiError> {
    principal.require(Capability::ModelsUse)?;
    Ok(Caller {
        tenant: principal.tenant.clone(),
        subject: principal.subject.clone(),
        session: Some(session.to_owned()).filter(|s| !s.is_empty()),
    })
}

fn usage(tokens: crate::domain::chat::TokenUsage, cost_micros: i64, currency: String) -> Usage {
    Usage {
        prompt_tokens: tokens.prompt,
        completion_tokens: tokens.completion,
        cost_micros,
        currency,
    }
}

fn profile_message(p: Profile) -> pb::Profile {
    pb::Profile {
        name: p.name,
        upstream: p.upstream,
        model: p.model,
        temperature: p.temperature,
        max_tokens: p.max_tokens,
        fallbacks: p.fallbacks,
        prompt_price_micros_per_1k: p.price.prompt_micros_per_1k,
        completion_price_micros_per_1k: p.price.completion_micros_per_1k,
        currency: p.currency,
        timeout_ms: p.timeout_ms,
        scope: if p.platform { "platform" } else { "tenant" }.into(),
        base: p.base.unwrap_or_default(),
        dimensions: p.dimensions.unwrap_or(0),
    }
}

impl SlmGrpc {
    /// The caller's chat call, checked and guarded, opened on the model router: where
    /// a whole answer and a streamed one start alike.
    async fn open(&self, request: Request<pb::ChatRequest>) -> Result<Answer, Status> {
        let principal = grpc::caller(&request)?;
        let bearer = grpc::bearer_of(&request).unwrap_or_default().to_owned();
        let r = request.into_inner();
        let caller = caller(&principal, &r.session_id)?;
        let call = self.guarded_call(&principal, &bearer, r).await?;
        Ok(self.router.open(caller, call).await?)
    }
}

type ChunkStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SlmService for SlmGrpc {
    async fn chat_completion(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let answer = self.open(request).await?;
        let (id, model, profile, created) = (
            answer.call_id.clone(),
            answer.model.clone(),
            answer.profile.clone(),
            answer.created,
        );
        let (mut done, tokens, cost, currency) = answer.collect().await?;
        if done.finish_reason == Some(FinishReason::ContentFilter) {
            // As OpenAI does: the reason says why, and nothing of the answer is given.
            done.content.clear();
            done.tool_calls.clear();
        }
        Ok(Response::new(pb::ChatResponse {
            id,
            model,
            message: Some(pb::ChatMessage {
                role: "assistant".into(),
                content: done.content,
                tool_calls: done.tool_calls.into_iter().map(tool_call_message).collect(),
                ..Default::default()
            }),
            finish_reason: done
                .finish_reason
                .map(|f| f.as_str().to_owned())
                .unwrap_or_default(),
            usage: Some(usage(tokens, cost, currency)),
            created,
            profile,
        }))
    }

    type ChatCompletionStreamStream = ChunkStream;

    async fn chat_completion_stream(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatCompletionStreamStream>, Status> {
        let answer = self.open(request).await?;
        let header = pb::ChatChunk {
            id: answer.call_id.clone(),
            model: answer.model.clone(),
            created: answer.created,
            profile: answer.profile.clone(),
            ..Default::default()
        };
        let chunks = futures::stream::unfold(Some(answer.pieces), move |pieces| {
            let header = header.clone();
            async move {
                let mut pieces = pieces?;
                let piece = pieces.recv().await?;
                let chunk = match piece {
                    Ok(Piece::Delta(delta)) => Ok(delta_chunk(header, delta)),
                    Ok(Piece::Done {
                        finish,
                        usage: tokens,
                        cost_micros,
                        currency,
                    }) => {
                        let last = pb::ChatChunk {
                            finish_reason: finish.as_str().into(),
                            usage: Some(usage(tokens, cost_micros, currency)),
                            ..header
                        };
                        return Some((Ok(last), None));
                    }
                    Err(e) => return Some((Err(Status::from(e)), None)),
                };
                Some((chunk, Some(pieces)))
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let principal = grpc::caller(&request)?;
        principal.require(Capability::ModelsRead)?;
        let profiles = self.router.visible_profiles(&principal.tenant).await?;
        Ok(Response::new(pb::ListModelsResponse {
            models: profiles
                .into_iter()
                .map(|p| pb::Model {
                    id: p.name,
                    upstream: p.upstream,
                    context_window: 0,
                    owned_by: if p.platform {
                        "platform".into()
                    } else {
                        principal.tenant.as_str().to_owned()
                    },
                    created: 0,
                    dimensions: p.dimensions.unwrap_or(0),
                    model: p.model,
                })
                .collect(),
        }))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let principal = grpc::caller(&request)?;
        let r = request.into_inner();
        // Memory embeds for a user who may read memory: a reader's search embeds its
        // query without the right to call models directly.
        let for_memory = principal
            .actor
            .as_deref()
            .and_then(|a| a.strip_prefix("service:"))
            == Some(somagent_common::service::MEMORY.name)
            && principal.can(Capability::MemoryRead);
        let caller = if for_memory {
            Caller {
                tenant: principal.tenant.clone(),
                subject: principal.subject.clone(),
                session: Some(r.session_id.clone()).filter(|s| !s.is_empty()),
            }
        } else {
            caller(&principal, &r.session_id)?
        };
        let done = self
            .router
            .embed(caller, &r.model, r.input, r.dimensions)
            .await?;
        Ok(Response::new(pb::EmbedResponse {
            dimensions: done.dimensions,
            model: done.model,
            profile: done.profile,
            usage: Some(usage(
                crate::domain::chat::TokenUsage {
                    prompt: done.embeddings.prompt_tokens,
                    completion: 0,
                },
                done.cost_micros,
                done.currency,
            )),
            data: done
                .embeddings
                .vectors
                .into_iter()
                .map(|values| pb::Vector { values })
                .collect(),
        }))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let principal = grpc::caller(&request)?;
        principal.require(Capability::ModelsRead)?;
        let profiles = self.router.visible_profiles(&principal.tenant).await?;
        Ok(Response::new(pb::ListProfilesResponse {
            profiles: profiles.into_iter().map(profile_message).collect(),
        }))
    }

    async fn put_profile(
        &self,
        request: Request<pb::PutProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let principal = grpc::caller(&request)?;
        let p = request
            .into_inner()
            .profile
            .ok_or_else(|| ApiError::validation("profile", "is required"))?;
        let saved = if p.scope == "platform" {
            profiles::put_platform(&self.router, &principal, p).await?
        } else {
            profiles::put_tenant(&self.router, &principal, p).await?
        };
        Ok(Response::new(profile_message(saved)))
    }

    async fn delete_profile(
        &self,
        request: Request<pb::DeleteProfileRequest>,
    ) -> Result<Response<pb::DeleteProfileResponse>, Status> {
        let principal = grpc::caller(&request)?;
        profiles::delete(&self.router, &principal, &request.get_ref().name).await?;
        Ok(Response::new(pb::DeleteProfileResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::Completion;

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> Delta {
        Delta::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn a_tool_call_streamed_in_pieces_comes_out_whole() {
        let header = pb::ChatChunk {
            id: "chatcmpl-1".into(),
            profile: "default".into(),
            ..Default::default()
        };
        let deltas = [
            Delta::Text("Looking".into()),
            piece(0, Some("call_1"), Some("search"), "{\"q\":"),
            piece(1, Some("call_2"), Some("clock"), ""),
            piece(0, None, None, "\"rust"),
            piece(1, None, None, "{}"),
            piece(0, None, None, " tonic\"}"),
        ];
        let chunks: Vec<pb::ChatChunk> = deltas
            .iter()
            .map(|d| delta_chunk(header.clone(), d.clone()))
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c.id == header.id && c.profile == header.profile)
        );
        assert_eq!(chunks[0].delta, "Looking");
        assert!(chunks[0].tool_calls.is_empty());
        // What a caller does with the chunks: a piece of a new index starts a call; ids
        // and names come once; arguments are appended.
        let mut joined = Completion::default();
        for c in &chunks {
            joined.push(&Delta::Text(c.delta.clone()));
            for d in &c.tool_calls {
                let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
                joined.push(&piece(
                    d.index,
                    some(&d.id).as_deref(),
                    some(&d.name).as_deref(),
                    &d.arguments,
                ));
            }
        }
        let whole = vec![
            ToolCall {
                id: "call_1".into(),
                name: "search".into(),
                arguments: "{\"q\":\"rust tonic\"}".into(),
            },
            ToolCall {
                id: "call_2".into(),
                name: "clock".into(),
                arguments: "{}".into(),
            },
        ];
        assert_eq!(joined.tool_calls, whole);
        assert_eq!(joined.content, "Looking");
        // The answer's end adds no piece: the last chunk carries it.
        let end = delta_chunk(
            header.clone(),
            Delta::Finish {
                reason: FinishReason::ToolCalls,
                usage: None,
            },
        );
        assert_eq!(end, header);
    }

    #[test]
    fn a_message_with_tool_calls_round_trips() {
        let calls = vec![
            pb::ToolCall {
                id: "call_1".into(),
                name: "search".into(),
                arguments: "{\"q\":\"x\"}".into(),
            },
            pb::ToolCall {
                id: "call_2".into(),
                name: "clock".into(),
                arguments: String::new(),
            },
        ];
        let request = pb::ChatRequest {
            messages: vec![
                pb::ChatMessage {
                    role: "user".into(),
                    content: "find x".into(),
                    ..Default::default()
                },
                pb::ChatMessage {
                    role: "assistant".into(),
                    tool_calls: calls.clone(),
                    ..Default::default()
                },
                pb::ChatMessage {
                    role: "tool".into(),
                    content: "x is 1".into(),
                    tool_call_id: "call_1".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let call = chat_call(request.clone()).unwrap();
        assert_eq!(call.messages[1].role, Role::Assistant);
        assert_eq!(call.messages[1].tool_calls[0].arguments, "{\"q\":\"x\"}");
        assert_eq!(call.messages[2].tool_call_id.as_deref(), Some("call_1"));
        let back: Vec<pb::ToolCall> = call.messages[1]
            .tool_calls
            .iter()
            .cloned()
            .map(tool_call_message)
            .collect();
        assert_eq!(back, calls);

        let mut nameless = request;
        nameless.messages[1].tool_calls[1].name.clear();
        let refused = chat_call(nameless).unwrap_err();
        assert!(refused.message.contains("message 1"), "{}", refused.message);
        assert!(
            refused.message.contains("function.name"),
            "{}",
            refused.message
        );
    }
}
