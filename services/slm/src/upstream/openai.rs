//! Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server, Ray Serve)
//! through `async-openai`. Its built-in retries are replaced by a plain HTTP service:
//! the model router decides about retries and fallbacks, and needs every failure's
//! status.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::{ApiError, ApiErrorResponse, OpenAIError};
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason as WireFinish,
};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{DeltaStream, FailureKind, UpstreamError};
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput, EncodingFormat};

use crate::domain::chat::{ChatCall, Delta, FinishReason, Message, Role, TokenUsage, ToolCall};
use crate::domain::embedding::Embeddings;

pub struct OpenAiUpstream {
    client: Client<OpenAIConfig>,
}

impl OpenAiUpstream {
    pub fn new(base_url: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            // Per read, not in total: a long answer streams for as long as it takes.
            .read_timeout(std::time::Duration::from_secs(300))
            .build()?;
        let service = {
            let http = http.clone();
            tower::service_fn(move |factory: HttpRequestFactory| {
                let http = http.clone();
                async move {
                    let response = http
                        .execute(factory.build().await?)
                        .await
                        .map_err(OpenAIError::Reqwest)?;
                    if response.status().is_success() {
                        return Ok::<reqwest::Response, OpenAIError>(response);
                    }
                    let status_code = response.status();
                    let message = response.text().await.unwrap_or_default();
                    Err(OpenAIError::ApiError(ApiErrorResponse {
                        status_code,
                        api_error: ApiError {
                            message,
                            ..Default::default()
                        },
                    }))
                }
            })
        };
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key.unwrap_or_default());
        Ok(Self {
            client: Client::build(http, config).with_http_service(service),
        })
    }

    pub async fn stream(&self, call: ChatCall) -> Result<DeltaStream, UpstreamError> {
        let request = wire_request(&call)?;
        let stream = self
            .client
            .chat()
            .create_stream(request)
            .await
            .map_err(|e| classify(&e))?;
        let deltas = stream
            .map(|item| match item {
                Ok(chunk) => Ok(deltas_of(chunk)),
                Err(e) => Err(classify(&e)),
            })
            .flat_map(|batch| {
                futures::stream::iter(match batch {
                    Ok(deltas) => deltas.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Ok(Box::pin(deltas))
    }
}

impl OpenAiUpstream {
    /// Embeds `texts` with `model`, the vectors in the order of the texts.
    pub async fn embed(
        &self,
        model: &str,
        texts: Vec<String>,
        dimensions: Option<u32>,
    ) -> Result<Embeddings, UpstreamError> {
        let request = CreateEmbeddingRequest {
            model: model.to_owned(),
            input: EmbeddingInput::StringArray(texts),
            encoding_format: Some(EncodingFormat::Float),
            user: None,
            dimensions,
        };
        let mut answer = self
            .client
            .embeddings()
            .create(request)
            .await
            .map_err(|e| classify(&e))?;
        answer.data.sort_by_key(|e| e.index);
        Ok(Embeddings {
            vectors: answer.data.into_iter().map(|e| e.embedding).collect(),
            prompt_tokens: u64::from(answer.usage.prompt_tokens),
        })
    }
}

/// The OpenAI request for `call`, built as JSON and read into the typed request, so
/// tools and tool choice pass through as the caller wrote them and are still checked.
fn wire_request(call: &ChatCall) -> Result<CreateChatCompletionRequest, UpstreamError> {
    let mut body = json!({
        "model": call.model,
        "messages": call.messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(tools) = &call.tools {
        body["tools"] = tools.clone();
    }
    if let Some(choice) = &call.tool_choice {
        body["tool_choice"] = choice.clone();
    }
    if let Some(t) = call.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = call.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(n) = call.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !call.stop.is_empty() {
        body["stop"] = json!(call.stop);
    }
    if let Some(seed) = call.seed {
        body["seed"] = json!(seed);
    }
    if let Some(format) = &call.response_format {
        body["response_format"] = format.clone();
    }
    serde_json::from_value(body).map_err(|e| {
        UpstreamError::new(
            FailureKind::Rejected,
            None,
            format!("the request cannot be sent: {e}"),
        )
    })
}

fn wire_message(m: &Message) -> Value {
    let mut out = json!({ "role": m.role.as_str(), "content": m.content });
    if let Some(name) = &m.name {
        out["name"] = json!(name);
    }
    match m.role {
        Role::Tool => out["tool_call_id"] = json!(m.tool_call_id.clone().unwrap_or_default()),
        Role::Assistant if !m.tool_calls.is_empty() => {
            out["tool_calls"] = wire_tool_calls(&m.tool_calls);
            if m.content.is_empty() {
                out["content"] = Value::Null;
            }
        }
        _ => {}
    }
    out
}

/// The OpenAI `tool_calls` array of an assistant message.
fn wire_tool_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "type": "function",
                "function": { "name": c.name, "arguments": c.arguments },
            })
        })
        .collect()
}

fn deltas_of(chunk: CreateChatCompletionStreamResponse) -> Vec<Delta> {
    let mut out = Vec::new();
    let mut finish = None;
    for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
            out.push(Delta::Text(text));
        }
        for call in choice.delta.tool_calls.unwrap_or_default() {
            let (name, arguments) = call
                .function
                .map(|f| (f.name, f.arguments.unwrap_or_default()))
                .unwrap_or_default();
            out.push(Delta::ToolCall {
                index: call.index,
                id: call.id,
                name,
                arguments,
            });
        }
        if let Some(reason) = choice.finish_reason {
            finish = Some(match reason {
                WireFinish::Stop => FinishReason::Stop,
                WireFinish::Length => FinishReason::Length,
                WireFinish::ToolCalls | WireFinish::FunctionCall => FinishReason::ToolCalls,
                WireFinish::ContentFilter => FinishReason::ContentFilter,
            });
        }
    }
    let usage = chunk.usage.map(|u| TokenUsage {
        prompt: u64::from(u.prompt_tokens),
        completion: u64::from(u.completion_tokens),
    });
    if let Some(reason) = finish {
        out.push(Delta::Finish { reason, usage });
    } else if let Some(usage) = usage {
        out.push(Delta::Usage(usage));
    }
    out
}

/// The upstream's failure, with whether another try may help.
fn classify(error: &OpenAIError) -> UpstreamError {
    match error {
        OpenAIError::ApiError(response) => {
            let status = response.status_code.as_u16();
            let kind = if status == 429 || response.status_code.is_server_error() {
                FailureKind::Transient
            } else {
                FailureKind::Rejected
            };
            UpstreamError::new(
                kind,
                Some(status),
                format!("the model server answered {status}"),
            )
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => UpstreamError::new(
            FailureKind::Timeout,
            None,
            "the model server did not answer in time",
        ),
        OpenAIError::Reqwest(e) if e.is_connect() || e.is_request() || e.is_body() => {
            UpstreamError::new(
                FailureKind::Transient,
                None,
                "the model server cannot be reached",
            )
        }
        OpenAIError::StreamError(_) => UpstreamError::new(
            FailureKind::Transient,
            None,
            "the model server's stream broke off",
        ),
        OpenAIError::JSONDeserialize(..) => UpstreamError::new(
            FailureKind::Rejected,
            None,
            "the model server sent something that is not an OpenAI answer",
        ),
        _ => UpstreamError::new(
            FailureKind::Rejected,
            None,
            "the model server refused the request",
        ),
    }
}
