//! `/v1/api-keys`: the caller's API keys (all of the tenant's with `api_keys:manage`).
//! A new key is shown once, in the creation answer.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::identity::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::paging::{Page, next_cursor};
use super::views::{ApiKey, ApiKeyPage, NewApiKey, Problem};
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    /// Capabilities, a subset of the owner's (`sessions:read`, ...).
    scopes: Vec<String>,
    /// RFC 3339; the key stops working then.
    #[serde(default)]
    expires_at: Option<String>,
    /// Your password: a key outlasts the login that makes it, so making one takes
    /// proof a stolen access token does not carry.
    #[serde(default)]
    password: String,
}

/// Create an API key for the caller, with their password, from a password login (never
/// with another key); the key is in the answer, this once. A new password revokes the
/// keys made under the old one.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateKey,
    responses(
        (status = 201, body = NewApiKey), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "a wrong password, an API key or a federated user", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    let body = json_body(body)?;
    let request = pb::CreateApiKeyRequest {
        name: body.name,
        scopes: body.scopes,
        expires_at: body.expires_at.unwrap_or_default(),
        password: body.password,
    };
    let answer = gateway
        .identity
        .clone()
        .create_api_key(auth.forward(request))
        .answer()
        .await?;
    let key = answer
        .key
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("identity answered without the key")))?;
    Ok((
        StatusCode::CREATED,
        Json(NewApiKey {
            api_key: key.into(),
            key: answer.secret,
        }),
    ))
}

/// List API keys: prefixes and metadata, never the keys.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(Page),
    responses((status = 200, body = ApiKeyPage), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<ApiKeyPage>, ApiError> {
    let request = pb::ListApiKeysRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_api_keys(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(ApiKeyPage {
        api_keys: answer.keys.into_iter().map(ApiKey::from).collect(),
        next_cursor: next_cursor(answer.page),
    }))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "the key's id")),
    responses((status = 204, description = "revoked"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn revoke(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway
        .identity
        .clone()
        .revoke_api_key(auth.forward(pb::RevokeApiKeyRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
