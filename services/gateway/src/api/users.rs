//! `/v1/users`: a tenant's users, managed by those with `users:write` and read by those
//! with `users:read`, always within the caller's own tenant.

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
use super::views::{MfaEnrollment, MfaState, Problem, User, UserPage};
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    /// At least 12 characters.
    password: String,
    /// Any of `viewer`, `operator`, `developer`, `admin`.
    roles: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `active` or `disabled`.
    status: Option<String>,
    /// Replaces the user's roles.
    roles: Option<Vec<String>>,
    /// A new password; users may change their own without `users:write`, giving
    /// `current_password`, from a password login (never with an API key).
    password: Option<String>,
    /// Your current password, required to change your own.
    current_password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollMfa {
    /// Your password.
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableMfa {
    /// Your password.
    password: String,
    /// A current 6-digit code, or one of your recovery codes.
    code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyMfa {
    /// The current 6-digit code of the enrolled secret.
    code: String,
}

/// Create a user in the caller's tenant.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, body = User), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, description = "the username is taken", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
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
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// List the caller's tenant's users.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(Page),
    responses((status = 200, body = UserPage), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<UserPage>, ApiError> {
    auth.principal.require(Capability::UsersRead)?;
    let request = pb::ListUsersRequest {
        page: Some(PageRequest::from(page)),
    };
    let answer = gateway
        .identity
        .clone()
        .list_users(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(UserPage {
        users: answer.users.into_iter().map(User::from).collect(),
        next_cursor: next_cursor(answer.page),
    }))
}

/// One user; a user of another tenant answers 404.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "the user's id")),
    responses(
        (status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    auth.principal.require(Capability::UsersRead)?;
    let user = gateway
        .identity
        .clone()
        .get_user(auth.forward(pb::GetUserRequest { id }))
        .answer()
        .await?;
    Ok(Json(user.into()))
}

/// Change a user's status, roles or password. A disabled user, new roles or a new
/// password void the user's earlier tokens at once.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "the user's id")),
    request_body = UpdateUser,
    responses(
        (status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "your own status or roles", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<UpdateUser>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    let body = json_body(body)?;
    let request = pb::UpdateUserRequest {
        id,
        status: body.status,
        replace_roles: body.roles.is_some(),
        roles: body.roles.unwrap_or_default(),
        password: body.password,
        current_password: body.current_password.unwrap_or_default(),
    };
    let user = gateway
        .identity
        .clone()
        .update_user(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(user.into()))
}

/// Delete a user with their API keys and logins; nobody deletes themself.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "the user's id")),
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
    auth.principal.require(Capability::UsersWrite)?;
    gateway
        .identity
        .clone()
        .delete_user(auth.forward(pb::DeleteUserRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start TOTP MFA for the caller's own account, with their password: the secret, its
/// `otpauth://` URI and ten recovery codes, shown this once. It is not active until
/// verified. Not with an API key.
#[utoipa::path(post, path = "/v1/users/{id}/mfa/enroll", tag = "users",
    params(("id" = String, Path, description = "the caller's own user id")),
    request_body = EnrollMfa,
    responses(
        (status = 200, body = MfaEnrollment), (status = 401, body = Problem),
        (status = 403, description = "wrong password, someone else's account, or an API key", body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn enroll_mfa(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<EnrollMfa>, JsonRejection>,
) -> Result<Json<MfaEnrollment>, ApiError> {
    // Whose account it is comes first (another tenant's id is a 404 whatever the body
    // says); identity then asks for the password if the body had none.
    let password = body.map(|Json(b)| b.password).unwrap_or_default();
    let request = pb::EnrollMfaRequest {
        user_id: id,
        password,
    };
    let answer = gateway
        .identity
        .clone()
        .enroll_mfa(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(MfaEnrollment {
        secret: answer.secret,
        otpauth_uri: answer.otpauth_uri,
        recovery_codes: answer.recovery_codes,
    }))
}

/// Turn MFA off for the caller's own account: their password and a current code (or a
/// recovery code). Not with an API key.
#[utoipa::path(delete, path = "/v1/auth/mfa", tag = "auth",
    request_body = DisableMfa,
    responses(
        (status = 204, description = "MFA is off"), (status = 401, body = Problem),
        (status = 403, description = "wrong password or code, or an API key", body = Problem),
        (status = 409, description = "MFA is not on", body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn disable_mfa(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<DisableMfa>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    let request = pb::DisableMfaRequest {
        password: body.password,
        code: body.code,
    };
    gateway
        .identity
        .clone()
        .disable_mfa(auth.forward(request))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Activate MFA with a current code; password logins then need `totp`.
#[utoipa::path(post, path = "/v1/users/{id}/mfa/verify", tag = "users",
    params(("id" = String, Path, description = "the caller's own user id")),
    request_body = VerifyMfa,
    responses(
        (status = 200, body = MfaState), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn verify_mfa(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<VerifyMfa>, JsonRejection>,
) -> Result<Json<MfaState>, ApiError> {
    let body = json_body(body)?;
    let request = pb::VerifyMfaRequest {
        user_id: id,
        code: body.code,
    };
    let answer = gateway
        .identity
        .clone()
        .verify_mfa(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(MfaState {
        mfa_enabled: answer.enabled,
    }))
}
