//! The OpenAI-compatible model API: `POST /v1/chat/completions` (JSON, or SSE chunks
//! ending in `data: [DONE]` with `stream: true`) and `GET /v1/models`, governed like
//! every other route (the caller's token, their capabilities, metering in slm), so the
//! official `openai` clients work against the platform unchanged.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::slm::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// An OpenAI chat completion request. Fields the platform does not use (`logprobs`,
/// `user`, ...) are accepted and ignored, as OpenAI-compatible servers do.
#[derive(Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A model profile's name, one of `GET /v1/models`; any other is a 404
    /// `model_not_found` whose `details.models` lists those the tenant may use.
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    /// A string or up to 4 strings.
    #[schema(value_type = Object)]
    stop: Option<Value>,
    seed: Option<u64>,
    /// OpenAI function tools.
    #[schema(value_type = Vec<Object>)]
    tools: Option<Value>,
    #[schema(value_type = Object)]
    tool_choice: Option<Value>,
    /// `{"type": "json_object"}`, or `{"type": "json_schema", "json_schema": {"name",
    /// "schema"}}` for an answer that is JSON of that schema (the local model is held
    /// to it token by token; an upstream gets it as asked).
    #[schema(value_type = Object)]
    response_format: Option<Value>,
    /// Only 1 is supported.
    n: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct WireMessage {
    /// `system` (or `developer`), `user`, `assistant` or `tool`.
    role: String,
    /// Text, or an array of `{"type": "text", "text": ...}` parts.
    #[schema(value_type = Object)]
    content: Option<Value>,
    name: Option<String>,
    tool_calls: Option<Vec<WireToolCall>>,
    tool_call_id: Option<String>,
}

/// A tool call the model made, as OpenAI writes it.
#[derive(Deserialize, ToSchema)]
pub struct WireToolCall {
    id: String,
    // `type` is always `function`; read and ignored.
    function: WireFunction,
}

#[derive(Deserialize, ToSchema)]
pub struct WireFunction {
    name: String,
    /// The arguments as JSON text.
    arguments: String,
}

/// Tool calls as OpenAI writes them in a message.
fn tool_calls_wire(calls: &[pb::ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
        .collect()
}

/// Pieces of tool calls as OpenAI streams them: the first piece of a call names it.
fn tool_call_deltas_wire(pieces: &[pb::ToolCallDelta]) -> Value {
    pieces
        .iter()
        .map(|p| {
            let mut piece = json!({ "index": p.index, "function": { "arguments": p.arguments } });
            if !p.id.is_empty() {
                piece["id"] = json!(p.id);
                piece["type"] = json!("function");
            }
            if !p.name.is_empty() {
                piece["function"]["name"] = json!(p.name);
            }
            piece
        })
        .collect()
}

fn text_of(content: Option<Value>, i: usize) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |part| match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(text)) => Ok(text),
                    _ => Err(ApiError::validation(
                        "messages",
                        format!("message {i}: only text content parts are supported"),
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("")),
        Some(_) => Err(ApiError::validation(
            "messages",
            format!("message {i}: content is text or an array of text parts"),
        )),
    }
}

fn grpc_request(body: ChatCompletionRequest) -> Result<pb::ChatRequest, ApiError> {
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::validation(
            "n",
            "only one choice (n = 1) is supported",
        ));
    }
    if body.messages.is_empty() {
        return Err(ApiError::validation(
            "messages",
            "name at least one message",
        ));
    }
    let stop = match body.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if items.len() <= 4 && items.iter().all(Value::is_string) => {
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        }
        Some(_) => {
            return Err(ApiError::validation(
                "stop",
                "is a string or up to 4 strings",
            ));
        }
    };
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        messages.push(pb::ChatMessage {
            role: m.role,
            content: text_of(m.content, i)?,
            name: m.name.unwrap_or_default(),
            tool_call_id: m.tool_call_id.unwrap_or_default(),
            tool_calls: m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| pb::ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
        });
    }
    let json_text = |v: Option<Value>| {
        v.filter(|v| !v.is_null())
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    Ok(pb::ChatRequest {
        model: body.model,
        messages,
        tools_json: json_text(body.tools),
        tool_choice_json: json_text(body.tool_choice),
        response_format_json: json_text(body.response_format),
        temperature: body.temperature,
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        session_id: String::new(),
        top_p: body.top_p,
        stop,
        seed: body.seed,
    })
}

fn usage_json(usage: Option<&somagent_common::proto::common::v1::Usage>) -> Value {
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// OpenAI's finish reason (and error code) for an answer withheld by content policy.
const CONTENT_FILTER: &str = "content_filter";
const WITHHELD: &str = "the answer broke this tenant's output policy and was withheld";

/// Create a chat completion, OpenAI style: JSON, or with `stream: true` a
/// `text/event-stream` of `chat.completion.chunk` objects ending in `data: [DONE]`.
/// The answer's text passes the tenant's output policy as it streams; one that breaks
/// it ends with `finish_reason: "content_filter"` (a stream first gets an error chunk,
/// and what it had not yet received of the answer is never sent).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "models",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "a `chat.completion`, or an SSE stream of `chat.completion.chunk`s", body = Object),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "`model_not_found`: no profile of this name for the tenant; `details.models` lists those there are", body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem), (status = 503, description = "no model could answer", body = Problem),
        (status = 504, description = "the model did not answer in time", body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn chat_completions(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    auth.principal.require(Capability::ModelsUse)?;
    let body = json_body(body)?;
    let (stream, include_usage) = (
        body.stream,
        body.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
    );
    let request = grpc_request(body)?;
    // Everything the client sends goes through moderation first, whatever role it
    // claims: an "assistant" turn or a "tool" result written by the client is the
    // client's words too, and so are the tool calls it says the model made.
    let said: Vec<&str> = request
        .messages
        .iter()
        .flat_map(|m| {
            std::iter::once(m.content.as_str()).chain(
                m.tool_calls
                    .iter()
                    .flat_map(|c| [c.name.as_str(), c.arguments.as_str()]),
            )
        })
        .filter(|text| !text.is_empty())
        .collect();
    gateway
        .moderation
        .check_prompt(&auth, &said.join("\n"), &request.session_id)
        .await?;
    let mut slm = gateway.slm.clone();
    if !stream {
        let answer = slm.chat_completion(auth.forward(request)).answer().await?;
        let message = answer.message.unwrap_or_default();
        let mut wire = json!({ "role": "assistant", "content": message.content });
        if !message.tool_calls.is_empty() {
            wire["tool_calls"] = tool_calls_wire(&message.tool_calls);
            if message.content.is_empty() {
                wire["content"] = Value::Null;
            }
        }
        if answer.finish_reason == CONTENT_FILTER {
            wire["content"] = Value::Null;
        }
        let body = json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [{ "index": 0, "message": wire, "finish_reason": answer.finish_reason, "logprobs": null }],
            "usage": usage_json(answer.usage.as_ref()),
        });
        let mut response = Json(body).into_response();
        annotate(
            &mut response,
            &answer.profile,
            answer.usage.as_ref().map(|u| u.cost_micros),
        );
        return Ok(response);
    }
    let watch = crate::credential_watch::CredentialWatch::new(gateway.verifier.clone(), &auth);
    let chunks = slm
        .chat_completion_stream(auth.forward(request))
        .answer()
        .await?;
    let mut first = true;
    let mut profile = None;
    let events = chunks
        .map(move |item| {
            let mut out = Vec::new();
            match item {
                Ok(chunk) => {
                    profile.get_or_insert_with(|| chunk.profile.clone());
                    let delta = DeltaWire {
                        role: std::mem::take(&mut first).then_some("assistant"),
                        content: Some(chunk.delta.as_str()).filter(|d| !d.is_empty()),
                        tool_calls: (!chunk.tool_calls.is_empty())
                            .then(|| tool_call_deltas_wire(&chunk.tool_calls)),
                    };
                    let finish = Some(chunk.finish_reason.as_str()).filter(|f| !f.is_empty());
                    if finish == Some(CONTENT_FILTER) {
                        // OpenAI's way of ending a filtered stream: an error, then the
                        // last chunk says why it ended.
                        out.push(event_of(&json!({ "error": {
                            "message": WITHHELD, "type": "invalid_request_error",
                            "param": null, "code": CONTENT_FILTER,
                        }})));
                    }
                    if !delta.is_empty() || finish.is_some() {
                        let choice = ChoiceWire { index: 0, delta, finish_reason: finish, logprobs: () };
                        out.push(chunk_event(&chunk, &[choice], None));
                    }
                    if finish.is_some() && include_usage {
                        out.push(chunk_event(&chunk, &[], Some(usage_json(chunk.usage.as_ref()))));
                    }
                    if finish.is_some() {
                        out.push(Event::default().data("[DONE]"));
                    }
                }
                Err(status) => {
                    let error = ApiError::from(status);
                    out.push(event_of(&json!({ "error": {
                        "message": error.message, "type": "server_error", "code": error.code.as_str(),
                    }})));
                }
            }
            futures::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
        })
        .flatten();
    // A revoked or expired credential ends the stream, with an OpenAI-style error chunk
    // that says why.
    let events = watch.guard(events, |why| {
        let error = json!({ "error": {
            "message": why.message, "type": "invalid_request_error", "code": why.code,
        }});
        Ok(event_of(&error))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies must pass the stream on as it comes.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A streamed chunk as OpenAI writes it, serialized straight into its SSE event (a
/// `json!` tree per chunk was a dozen allocations and a second copy).
#[derive(Serialize)]
struct ChunkWire<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChoiceWire<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChoiceWire<'a> {
    index: u32,
    delta: DeltaWire<'a>,
    finish_reason: Option<&'a str>,
    /// Always `null`.
    logprobs: (),
}

#[derive(Serialize)]
struct DeltaWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

impl DeltaWire<'_> {
    fn is_empty(&self) -> bool {
        self.role.is_none() && self.content.is_none() && self.tool_calls.is_none()
    }
}

/// The SSE event of a streamed chunk with these choices (and usage, on the last).
fn chunk_event(chunk: &pb::ChatChunk, choices: &[ChoiceWire], usage: Option<Value>) -> Event {
    event_of(&ChunkWire {
        id: &chunk.id,
        object: "chat.completion.chunk",
        created: chunk.created,
        model: &chunk.model,
        choices,
        usage,
    })
}

/// An SSE event whose data is `value` as JSON.
fn event_of(value: &impl serde::Serialize) -> Event {
    Event::default()
        .json_data(value)
        // Only a map with keys that are not strings fails to serialize; none is here.
        .unwrap_or_else(|_| Event::default().data("{}"))
}

/// The profile that answered and what it cost, for callers that want them.
pub(super) fn annotate(response: &mut Response, profile: &str, cost_micros: Option<i64>) {
    if let Ok(value) = HeaderValue::from_str(profile) {
        response.headers_mut().insert("x-somagent-profile", value);
    }
    if let Some(cost) = cost_micros {
        response
            .headers_mut()
            .insert("x-somagent-cost-micros", HeaderValue::from(cost));
    }
}

/// The models (profiles) the caller's tenant may use, OpenAI style: exactly the names
/// `/v1/chat/completions` and (those with `dimensions`) `/v1/embeddings` accept.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "`{object: \"list\", data: [{id, object: \"model\", created, owned_by}]}`", body = Object),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn models(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    auth.principal.require(Capability::ModelsRead)?;
    let answer = gateway
        .slm
        .clone()
        .list_models(auth.forward(pb::ListModelsRequest {}))
        .answer()
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": answer.models.into_iter().map(|m| {
            let mut model = json!({
                "id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by,
            });
            // Embedding models say their vector size (OpenAI lists no such field; its
            // clients ignore what they do not know).
            if m.dimensions > 0 {
                model["dimensions"] = json!(m.dimensions);
            }
            model
        }).collect::<Vec<_>>(),
    })))
}
