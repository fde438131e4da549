//! `/v1/tenants`: platform admins create tenants with their first admin and list them
//! all; a tenant's members see their own tenant only. Identity enforces the same rules
//! again on the token the call carries.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::identity::v1 as pb;

use super::Authenticated;
use crate::Gateway;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    slug: String,
    display_name: String,
    admin: NewAdmin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAdmin {
    username: String,
    password: String,
}

/// `?limit=&cursor=` of a list route.
#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

impl From<Page> for PageRequest {
    fn from(page: Page) -> Self {
        PageRequest {
            limit: page.limit.unwrap_or(50),
            cursor: page.cursor.unwrap_or_default(),
        }
    }
}

fn tenant_json(t: pb::Tenant) -> Value {
    json!({
        "id": t.id,
        "slug": t.slug,
        "display_name": t.display_name,
        "status": t.status,
        "created_at": t.created_at,
    })
}

/// A body that is not the expected JSON is a 400 (unreadable) or 422 (wrong fields).
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
            somagent_common::error::ErrorCode::ValidationFailed,
            e.body_text(),
        )),
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            somagent_common::error::ErrorCode::PayloadTooLarge,
            "the request body is too large",
        )),
        Err(e) => Err(ApiError::bad_request(e.body_text())),
    }
}

/// `POST /v1/tenants` `{slug, display_name, admin: {username, password}}` → 201.
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.principal.require(Capability::PlatformAdmin)?;
    let body = json_body(body)?;
    let request = pb::CreateTenantRequest {
        slug: body.slug,
        display_name: body.display_name,
        admin_username: body.admin.username,
        admin_password: body.admin.password,
    };
    let tenant = gateway
        .identity
        .clone()
        .create_tenant(auth.forward(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(tenant_json(tenant))))
}

/// `GET /v1/tenants?limit=&cursor=`.
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let request = pb::ListTenantsRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_tenants(auth.forward(request))
        .await?
        .into_inner();
    let next = answer.page.map(|p| p.next_cursor).filter(|c| !c.is_empty());
    Ok(Json(json!({
        "tenants": answer.tenants.into_iter().map(tenant_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /v1/tenants/{id}`: another tenant's id answers 404.
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let request = pb::GetTenantRequest { id };
    let tenant = gateway
        .identity
        .clone()
        .get_tenant(auth.forward(request))
        .await?
        .into_inner();
    Ok(Json(tenant_json(tenant)))
}
