//! `POST /v1/embeddings`, OpenAI-compatible: the official `openai` clients embed
//! through the platform unchanged (`input` a string or a list of strings,
//! `encoding_format` `float` or `base64`, `dimensions` where the model allows it),
//! governed like chat: the caller's `models:use`, the tenant's prompt policy on every
//! text, and the call metered in slm.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
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

/// An OpenAI embeddings request.
#[derive(Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// An embedding model's profile, one of `GET /v1/models` with `dimensions`; the
    /// platform's `embeddings` profile when empty.
    #[serde(default)]
    model: String,
    /// A text or a list of texts (token arrays are not accepted).
    #[schema(value_type = Object)]
    input: Value,
    /// `float` (the default) or `base64` (little-endian 32-bit floats).
    encoding_format: Option<String>,
    /// A shorter vector, for models that support it.
    dimensions: Option<u32>,
    /// Accepted and ignored: the platform knows its caller.
    #[allow(dead_code)]
    user: Option<String>,
}

fn texts(input: Value) -> Result<Vec<String>, ApiError> {
    let refuse = || {
        ApiError::validation(
            "input",
            "is a string or a list of strings (token arrays are not accepted)",
        )
    };
    match input {
        Value::String(text) => Ok(vec![text]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(refuse()),
            })
            .collect(),
        _ => Err(refuse()),
    }
}

/// Create embeddings, OpenAI style: `{object: "list", data: [{object: "embedding",
/// index, embedding}], model, usage}`; each vector the size of the model's (its
/// profile's `dimensions`), or of `dimensions` where the model allows a smaller one.
#[utoipa::path(post, path = "/v1/embeddings", tag = "models",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "a list of `embedding`s, one per text, in order", body = Object),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "`model_not_found`", body = Problem),
        (status = 422, description = "an empty or too long text, a chat model, a size the model does not give", body = Problem),
        (status = 429, body = Problem),
        (status = 502, description = "the model answered with vectors of the wrong size", body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn embeddings(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<EmbeddingRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    auth.principal.require(Capability::ModelsUse)?;
    let body = json_body(body)?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::validation(
                "encoding_format",
                "is `float` or `base64`",
            ));
        }
    };
    let input = texts(body.input)?;
    gateway
        .moderation
        .check_prompt(&auth, &input.join("\n"), "")
        .await?;
    let request = pb::EmbedRequest {
        model: body.model,
        input,
        dimensions: body.dimensions,
        session_id: String::new(),
    };
    let answer = gateway
        .slm
        .clone()
        .embed(auth.forward(request))
        .answer()
        .await?;
    let data: Vec<Value> = answer
        .data
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.values.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector.values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let tokens = answer.usage.as_ref().map_or(0, |u| u.prompt_tokens);
    let mut response = Json(json!({
        "object": "list",
        "data": data,
        "model": answer.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response();
    super::chat::annotate(
        &mut response,
        &answer.profile,
        answer.usage.as_ref().map(|u| u.cost_micros),
    );
    Ok(response)
}
