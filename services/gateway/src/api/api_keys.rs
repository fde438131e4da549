//! `/v1/api-keys`: the caller's API keys (all of the tenant's with `api_keys:manage`).
//! A new key is shown once, in the creation answer.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::identity::v1 as pb;

use super::Authenticated;
use super::tenants::{Page, json_body};
use crate::Gateway;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

fn key_json(k: pb::ApiKey) -> Value {
    let optional = |s: String| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s)
        }
    };
    json!({
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "scopes": k.scopes,
        "expires_at": optional(k.expires_at),
        "last_used_at": optional(k.last_used_at),
        "created_at": k.created_at,
    })
}

/// `POST /v1/api-keys` `{name, scopes, expires_at?}` → 201 with `key` (shown once).
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_body(body)?;
    let request = pb::CreateApiKeyRequest {
        name: body.name,
        scopes: body.scopes,
        expires_at: body.expires_at.unwrap_or_default(),
    };
    let answer = gateway
        .identity
        .clone()
        .create_api_key(auth.forward(request))
        .await?
        .into_inner();
    let mut shown = answer.key.map(key_json).unwrap_or(Value::Null);
    shown["key"] = Value::String(answer.secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `GET /v1/api-keys?limit=&cursor=`: prefixes and metadata, never the keys.
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let request = pb::ListApiKeysRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_api_keys(auth.forward(request))
        .await?
        .into_inner();
    let next = answer.page.map(|p| p.next_cursor).filter(|c| !c.is_empty());
    Ok(Json(json!({
        "api_keys": answer.keys.into_iter().map(key_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `DELETE /v1/api-keys/{id}` → 204; the key stops working at once.
pub async fn revoke(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let request = pb::RevokeApiKeyRequest { id };
    gateway
        .identity
        .clone()
        .revoke_api_key(auth.forward(request))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
