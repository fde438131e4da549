//! `/v1/users`: a tenant's users, managed by those with `users:write` and read by those
//! with `users:read`, always within the caller's own tenant.

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
use super::tenants::{Page, json_body};
use crate::Gateway;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    roles: Vec<String>,
}

fn user_json(u: pb::User) -> Value {
    json!({
        "id": u.id,
        "tenant": u.tenant,
        "username": u.username,
        "status": u.status,
        "roles": u.roles,
        "mfa_enabled": u.mfa_enabled,
        "created_at": u.created_at,
    })
}

/// `POST /v1/users` `{username, password, roles}` → 201.
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.principal.require(Capability::UsersWrite)?;
    let body = json_body(body)?;
    let request = pb::CreateUserRequest {
        username: body.username,
        password: body.password,
        roles: body.roles,
    };
    let user = gateway
        .identity
        .clone()
        .create_user(auth.forward(request))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, Json(user_json(user))))
}

/// `GET /v1/users?limit=&cursor=`.
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    auth.principal.require(Capability::UsersRead)?;
    let request = pb::ListUsersRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_users(auth.forward(request))
        .await?
        .into_inner();
    let next = answer.page.map(|p| p.next_cursor).filter(|c| !c.is_empty());
    Ok(Json(json!({
        "users": answer.users.into_iter().map(user_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /v1/users/{id}`: a user of another tenant answers 404.
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.principal.require(Capability::UsersRead)?;
    let request = pb::GetUserRequest { id };
    let user = gateway
        .identity
        .clone()
        .get_user(auth.forward(request))
        .await?
        .into_inner();
    Ok(Json(user_json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyMfa {
    code: String,
}

/// `POST /v1/users/{id}/mfa/enroll`: the caller's new TOTP secret and `otpauth://` URI,
/// shown this once. The secret is not active until verified.
pub async fn enroll_mfa(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let request = pb::EnrollMfaRequest { user_id: id };
    let answer = gateway
        .identity
        .clone()
        .enroll_mfa(auth.forward(request))
        .await?
        .into_inner();
    Ok(Json(
        json!({ "secret": answer.secret, "otpauth_uri": answer.otpauth_uri }),
    ))
}

/// `POST /v1/users/{id}/mfa/verify` `{code}`: activates MFA; password logins then need
/// `totp`.
pub async fn verify_mfa(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<VerifyMfa>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let request = pb::VerifyMfaRequest {
        user_id: id,
        code: body.code,
    };
    let answer = gateway
        .identity
        .clone()
        .verify_mfa(auth.forward(request))
        .await?
        .into_inner();
    Ok(Json(json!({ "mfa_enabled": answer.enabled })))
}
