//! `/v1/model-profiles`: how a tenant calls its models: which upstream and model, the
//! defaults, the fallbacks, the price. Read with `models:read`, changed with
//! `settings:write`; the platform's own profiles show with `scope: "platform"`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::slm::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::tenants::json_body;
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProfile {
    /// A configured upstream: `default`, `local`, or one of `SOMAGENT_LLM_UPSTREAMS`.
    upstream: String,
    /// The model's id on that upstream.
    model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    /// Profiles tried in order when this one fails before answering.
    #[serde(default)]
    fallbacks: Vec<String>,
    /// Millionths of `currency` per 1,000 prompt tokens.
    #[serde(default)]
    prompt_price_micros_per_1k: i64,
    #[serde(default)]
    completion_price_micros_per_1k: i64,
    /// ISO 4217, `USD` by default.
    currency: Option<String>,
    /// How long to wait for the first token and between tokens (default 30000).
    timeout_ms: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelProfile {
    name: String,
    upstream: String,
    model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    fallbacks: Vec<String>,
    prompt_price_micros_per_1k: i64,
    completion_price_micros_per_1k: i64,
    currency: String,
    timeout_ms: u32,
    /// `platform` or `tenant`.
    scope: String,
}

impl From<pb::Profile> for ModelProfile {
    fn from(p: pb::Profile) -> Self {
        Self {
            name: p.name,
            upstream: p.upstream,
            model: p.model,
            temperature: p.temperature,
            max_tokens: p.max_tokens,
            fallbacks: p.fallbacks,
            prompt_price_micros_per_1k: p.prompt_price_micros_per_1k,
            completion_price_micros_per_1k: p.completion_price_micros_per_1k,
            currency: p.currency,
            timeout_ms: p.timeout_ms,
            scope: p.scope,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelProfiles {
    profiles: Vec<ModelProfile>,
}

/// The profiles the caller's tenant may use.
#[utoipa::path(get, path = "/v1/model-profiles", tag = "models",
    responses((status = 200, body = ModelProfiles), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<ModelProfiles>, ApiError> {
    auth.principal.require(Capability::ModelsRead)?;
    let answer = gateway
        .slm
        .clone()
        .list_profiles(auth.forward(pb::ListProfilesRequest {}))
        .await?
        .into_inner();
    Ok(Json(ModelProfiles {
        profiles: answer
            .profiles
            .into_iter()
            .map(ModelProfile::from)
            .collect(),
    }))
}

/// Create or replace one of the tenant's profiles.
#[utoipa::path(put, path = "/v1/model-profiles/{name}", tag = "models",
    params(("name" = String, Path, description = "the profile's name, what `model` names in a chat request")),
    request_body = PutProfile,
    responses((status = 200, body = ModelProfile), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
    body: Result<Json<PutProfile>, JsonRejection>,
) -> Result<Json<ModelProfile>, ApiError> {
    auth.principal.require(Capability::SettingsWrite)?;
    let b = json_body(body)?;
    let profile = pb::Profile {
        name,
        upstream: b.upstream,
        model: b.model,
        temperature: b.temperature,
        max_tokens: b.max_tokens,
        fallbacks: b.fallbacks,
        prompt_price_micros_per_1k: b.prompt_price_micros_per_1k,
        completion_price_micros_per_1k: b.completion_price_micros_per_1k,
        currency: b.currency.unwrap_or_default(),
        timeout_ms: b.timeout_ms.unwrap_or_default(),
        scope: String::new(),
    };
    let saved = gateway
        .slm
        .clone()
        .put_profile(auth.forward(pb::PutProfileRequest {
            profile: Some(profile),
        }))
        .await?
        .into_inner();
    Ok(Json(saved.into()))
}

/// Delete one of the tenant's profiles (a platform profile of the same name shows
/// again).
#[utoipa::path(delete, path = "/v1/model-profiles/{name}", tag = "models",
    params(("name" = String, Path, description = "the profile's name")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.principal.require(Capability::SettingsWrite)?;
    gateway
        .slm
        .clone()
        .delete_profile(auth.forward(pb::DeleteProfileRequest { name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
