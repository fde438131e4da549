//! `/v1/tenants`: platform admins create, list, suspend and delete tenants; a tenant's
//! members see their own tenant and its admins rename it. Identity enforces the same
//! rules again on the token the call carries.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::identity::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::paging::{Page, next_cursor};
use super::views::{Problem, Tenant, TenantPage};
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lowercase letters, digits and `-`; what users log in with.
    slug: String,
    display_name: String,
    admin: NewAdmin,
}

/// The tenant's first user, with the `admin` role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdmin {
    username: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    display_name: Option<String>,
    /// `active` or `suspended` (platform admins): a suspended tenant's tokens stop
    /// working at once and its users cannot log in.
    status: Option<String>,
}

/// Create a tenant with its first admin (platform admins).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, body = Tenant),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, description = "the slug is taken", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
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
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// List tenants: all of them for platform admins, otherwise the caller's own.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(Page),
    responses((status = 200, body = TenantPage), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<TenantPage>, ApiError> {
    let request = pb::ListTenantsRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_tenants(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(TenantPage {
        tenants: answer.tenants.into_iter().map(Tenant::from).collect(),
        next_cursor: next_cursor(answer.page),
    }))
}

/// One tenant; another tenant's id answers 404.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "the tenant's id")),
    responses((status = 200, body = Tenant), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let request = pb::GetTenantRequest { id };
    let tenant = gateway
        .identity
        .clone()
        .get_tenant(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(tenant.into()))
}

/// Rename a tenant (its admins, platform admins) or suspend / reactivate it (platform
/// admins, not their own tenant).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "the tenant's id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, body = Tenant), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<UpdateTenant>, JsonRejection>,
) -> Result<Json<Tenant>, ApiError> {
    let body = json_body(body)?;
    let request = pb::UpdateTenantRequest {
        id,
        display_name: body.display_name,
        status: body.status,
    };
    let tenant = gateway
        .identity
        .clone()
        .update_tenant(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(tenant.into()))
}

/// Delete a tenant (platform admins, not their own): its users cannot log in and its
/// tokens stop working at once; the slug stays taken.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "the tenant's id")),
    responses(
        (status = 204, description = "deleted"), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway
        .identity
        .clone()
        .delete_tenant(auth.forward(pb::DeleteTenantRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
