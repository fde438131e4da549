//! `/v1/model-profiles`: the names models are called by. Prices belong to the platform
//! (as OpenAI's do): a platform profile (`scope: "platform"`) says which upstream and
//! model and what it costs, and only a platform admin (`platform:admin`) sets one. A
//! tenant (`settings:write`) tunes a platform profile, its `base`, under a name of its
//! own: temperature, token limit, timeout and fallbacks, at the base's price. Read with
//! `models:read`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use somagent_common::auth::Capability;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::slm::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProfile {
    /// `tenant` (the default): a tuning of a platform profile for the caller's tenant;
    /// `platform`: a platform profile, for platform admins only.
    scope: Option<String>,
    /// A tenant profile's platform profile, whose upstream, model and price it uses.
    base: Option<String>,
    /// Platform profiles only: a configured upstream (`default`, `local`, or one of
    /// `SOMAGENT_SLM__LLM_UPSTREAMS`).
    upstream: Option<String>,
    /// Platform profiles only: the model's id on that upstream.
    model: Option<String>,
    temperature: Option<f32>,
    /// The most tokens an answer may have; a tenant's cannot exceed its base's.
    max_tokens: Option<u32>,
    /// Profiles tried in order when this one fails before answering.
    #[serde(default)]
    fallbacks: Vec<String>,
    /// Platform profiles only: millionths of `currency` per 1,000 prompt tokens.
    prompt_price_micros_per_1k: Option<i64>,
    /// Platform profiles only.
    completion_price_micros_per_1k: Option<i64>,
    /// Platform profiles only: ISO 4217, `USD` by default.
    currency: Option<String>,
    /// How long to wait for the first token and between tokens (default 30000).
    timeout_ms: Option<u32>,
    /// Platform profiles only: set for an embedding model, its vector size (the profile
    /// then serves `/v1/embeddings`, not chat).
    dimensions: Option<u32>,
}

impl PutProfile {
    /// The fields only a platform profile may set that this body sets.
    fn platform_only(&self) -> Vec<&'static str> {
        [
            ("upstream", self.upstream.is_some()),
            ("model", self.model.is_some()),
            (
                "prompt_price_micros_per_1k",
                self.prompt_price_micros_per_1k.is_some(),
            ),
            (
                "completion_price_micros_per_1k",
                self.completion_price_micros_per_1k.is_some(),
            ),
            ("currency", self.currency.is_some()),
            ("dimensions", self.dimensions.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
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
    /// A tenant profile's platform profile: its upstream, model and price are the base's.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    /// An embedding model's vector size; absent for a chat model.
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
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
            base: Some(p.base).filter(|b| !b.is_empty()),
            dimensions: Some(p.dimensions).filter(|d| *d > 0),
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
        .answer()
        .await?;
    Ok(Json(ModelProfiles {
        profiles: answer
            .profiles
            .into_iter()
            .map(ModelProfile::from)
            .collect(),
    }))
}

/// Create or replace a profile: the tenant's tuning of a platform profile, or with
/// `scope: "platform"` (platform admins) a platform profile with its upstream, model and
/// price.
#[utoipa::path(put, path = "/v1/model-profiles/{name}", tag = "models",
    params(("name" = String, Path, description = "the profile's name, what `model` names in a chat request")),
    request_body = PutProfile,
    responses(
        (status = 200, body = ModelProfile), (status = 401, body = Problem),
        (status = 403, description = "a tenant set a price, upstream or model, or lacks the capability", body = Problem),
        (status = 409, description = "a tenant profile took a platform profile's name", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
    body: Result<Json<PutProfile>, JsonRejection>,
) -> Result<Json<ModelProfile>, ApiError> {
    let b = json_body(body)?;
    let platform = match b.scope.as_deref() {
        None | Some("tenant") => false,
        Some("platform") => true,
        Some(_) => return Err(ApiError::validation("scope", "is `tenant` or `platform`")),
    };
    if platform {
        auth.principal.require(Capability::PlatformAdmin)?;
        if b.base.is_some() {
            return Err(ApiError::validation(
                "base",
                "is for tenant profiles; a platform profile names its upstream and model",
            ));
        }
    } else {
        auth.principal.require(Capability::SettingsWrite)?;
        let platform_only = b.platform_only();
        if !platform_only.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "prices, upstreams and upstream models are set by platform admins; a tenant profile names a platform profile as its `base` and tunes temperature, max_tokens, timeout_ms and fallbacks",
            )
            .with_details(serde_json::json!({ "platform_only": platform_only })));
        }
    }
    let profile = pb::Profile {
        name,
        upstream: b.upstream.unwrap_or_default(),
        model: b.model.unwrap_or_default(),
        temperature: b.temperature,
        max_tokens: b.max_tokens,
        fallbacks: b.fallbacks,
        prompt_price_micros_per_1k: b.prompt_price_micros_per_1k.unwrap_or_default(),
        completion_price_micros_per_1k: b.completion_price_micros_per_1k.unwrap_or_default(),
        currency: b.currency.unwrap_or_default(),
        timeout_ms: b.timeout_ms.unwrap_or_default(),
        scope: if platform { "platform" } else { "tenant" }.into(),
        base: b.base.unwrap_or_default(),
        dimensions: b.dimensions.unwrap_or_default(),
    };
    let saved = gateway
        .slm
        .clone()
        .put_profile(auth.forward(pb::PutProfileRequest {
            profile: Some(profile),
        }))
        .answer()
        .await?;
    Ok(Json(saved.into()))
}

/// Delete one of the tenant's profiles, or (platform admins) a platform profile no
/// tenant profile builds on.
#[utoipa::path(delete, path = "/v1/model-profiles/{name}", tag = "models",
    params(("name" = String, Path, description = "the profile's name")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, description = "tenant profiles build on this platform profile, or configuration sets it", body = Problem)),
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
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
