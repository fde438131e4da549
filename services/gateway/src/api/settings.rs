//! `/v1/settings*` and `/v1/me/preferences`: the tenant's settings (a JSON document
//! changed by JSON merge patches, each change a version), its feature flags, and each
//! user's own preferences.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::clock::rfc3339_ms;
use somagent_common::error::ApiError;
use somagent_common::proto::settings::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// A settings document as it applies now, defaults filled in.
#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    #[schema(value_type = Object)]
    settings: Value,
    /// 0 until the first change; send it back as `If-Match` to change only that version.
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    updated_by: String,
}

/// One version of the tenant's settings: what was set after the change, and before.
#[derive(Serialize, ToSchema)]
pub struct SettingsVersionView {
    version: i64,
    #[schema(value_type = Object)]
    settings: Value,
    #[schema(value_type = Object)]
    previous: Value,
    changed_by: String,
    changed_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SettingsVersions {
    versions: Vec<SettingsVersionView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsParams {
    /// 1..=200, 50 by default.
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct FlagView {
    name: String,
    enabled: bool,
    /// `tenant` (set for this tenant), `platform` (the platform's default) or `unset`.
    source: String,
}

#[derive(Serialize, ToSchema)]
pub struct FlagList {
    flags: Vec<FlagView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFlag {
    enabled: bool,
    /// `tenant` (default, `settings:write`) or `platform`: the default for every
    /// tenant (`platform:admin`).
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlagScope {
    /// `tenant` (default) or `platform`.
    scope: Option<String>,
}

fn settings_view(s: pb::Settings) -> Result<SettingsView, ApiError> {
    Ok(SettingsView {
        settings: serde_json::from_str(&s.json).map_err(ApiError::internal)?,
        version: s.version,
        updated_at: (s.updated_at_ms > 0).then(|| rfc3339_ms(s.updated_at_ms)),
        updated_by: s.updated_by,
    })
}

fn version_view(v: pb::Version) -> Result<SettingsVersionView, ApiError> {
    Ok(SettingsVersionView {
        version: v.version,
        settings: serde_json::from_str(&v.json).map_err(ApiError::internal)?,
        previous: serde_json::from_str(&v.previous_json).map_err(ApiError::internal)?,
        changed_by: v.changed_by,
        changed_at: rfc3339_ms(v.changed_at_ms),
    })
}

fn flag_view(f: pb::Flag) -> FlagView {
    FlagView {
        name: f.name,
        enabled: f.enabled,
        source: f.source,
    }
}

/// The merge patch in the body (`application/merge-patch+json` or JSON) and the
/// version in `If-Match`, if any.
fn patch_request(headers: &HeaderMap, body: &Bytes) -> Result<pb::PatchRequest, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let if_version = match headers.get(header::IF_MATCH) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| ApiError::validation("If-Match", "is a settings version"))?,
    };
    Ok(pb::PatchRequest {
        patch_json: patch.to_string(),
        if_version,
    })
}

fn platform_scope(scope: Option<&str>) -> Result<bool, ApiError> {
    match scope {
        None | Some("tenant") => Ok(false),
        Some("platform") => Ok(true),
        Some(_) => Err(ApiError::validation("scope", "is tenant or platform")),
    }
}

/// The tenant's settings, defaults filled in (`settings:read`).
#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, body = SettingsView), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_settings(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<SettingsView>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .get_settings(auth.forward(pb::GetSettingsRequest {}))
        .answer()
        .await?;
    Ok(Json(settings_view(answer)?))
}

/// Changes the tenant's settings with a JSON merge patch (RFC 7396; `null` resets a key
/// to its default) (`settings:write`). Keys: `display_name`, `default_model_profile`,
/// `data_residency`, `sessions.memory_recall`, `sessions.tool_rounds` (0-32),
/// `sessions.approval_timeout_secs` (10-86400; these two `null` until set: the
/// platform's configured default applies). An unknown key or a wrong type is a
/// 422 naming it; with `If-Match: <version>`, a 409 if the settings moved on. Each
/// change is a new version, audited with what it replaced; services use it at once.
#[utoipa::path(patch, path = "/v1/settings", tag = "settings",
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = SettingsView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, description = "`If-Match` names an older version", body = Problem),
              (status = 422, description = "an unknown key or a wrong type, named by its path", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn patch_settings(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SettingsView>, ApiError> {
    let request = patch_request(&headers, &body)?;
    let answer = gateway
        .settings
        .clone()
        .patch_settings(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(settings_view(answer)?))
}

/// The versions of the tenant's settings, newest first.
#[utoipa::path(get, path = "/v1/settings/versions", tag = "settings",
    params(VersionsParams),
    responses((status = 200, body = SettingsVersions), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn versions(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<VersionsParams>,
) -> Result<Json<SettingsVersions>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .list_versions(auth.forward(pb::ListVersionsRequest {
            limit: params.limit.unwrap_or(0),
        }))
        .answer()
        .await?;
    Ok(Json(SettingsVersions {
        versions: answer
            .versions
            .into_iter()
            .map(version_view)
            .collect::<Result<_, _>>()?,
    }))
}

/// One version of the tenant's settings, as it was written.
#[utoipa::path(get, path = "/v1/settings/versions/{version}", tag = "settings",
    params(("version" = i64, Path)),
    responses((status = 200, body = SettingsVersionView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn version(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(version): Path<i64>,
) -> Result<Json<SettingsVersionView>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .get_version(auth.forward(pb::GetVersionRequest { version }))
        .answer()
        .await?;
    Ok(Json(version_view(answer)?))
}

/// Every feature flag set for the tenant or by the platform, as it applies here.
#[utoipa::path(get, path = "/v1/settings/flags", tag = "settings",
    responses((status = 200, body = FlagList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn flags(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<FlagList>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .list_flags(auth.forward(pb::ListFlagsRequest {}))
        .answer()
        .await?;
    Ok(Json(FlagList {
        flags: answer.flags.into_iter().map(flag_view).collect(),
    }))
}

/// One flag as it applies to the tenant: its own setting, else the platform's, else off.
#[utoipa::path(get, path = "/v1/settings/flags/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 200, body = FlagView), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn flag(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<FlagView>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .get_flag(auth.forward(pb::GetFlagRequest { name }))
        .answer()
        .await?;
    Ok(Json(flag_view(answer)))
}

/// Sets a flag for the tenant (`settings:write`), or with `"scope": "platform"` its
/// default for every tenant (`platform:admin`). Audited with what it was.
#[utoipa::path(put, path = "/v1/settings/flags/{name}", tag = "settings",
    params(("name" = String, Path)), request_body = PutFlag,
    responses((status = 200, body = FlagView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put_flag(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
    body: Result<Json<PutFlag>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FlagView>, ApiError> {
    let b = super::body::json_body(body)?;
    let request = pb::PutFlagRequest {
        name,
        enabled: b.enabled,
        platform: platform_scope(b.scope.as_deref())?,
        clear: false,
    };
    let answer = gateway
        .settings
        .clone()
        .put_flag(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(flag_view(answer)))
}

/// Removes the tenant's own setting of a flag (the platform's default applies again),
/// or with `?scope=platform` the platform's default.
#[utoipa::path(delete, path = "/v1/settings/flags/{name}", tag = "settings",
    params(("name" = String, Path), FlagScope),
    responses((status = 200, body = FlagView), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn clear_flag(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
    Query(scope): Query<FlagScope>,
) -> Result<Json<FlagView>, ApiError> {
    let request = pb::PutFlagRequest {
        name,
        enabled: false,
        platform: platform_scope(scope.scope.as_deref())?,
        clear: true,
    };
    let answer = gateway
        .settings
        .clone()
        .put_flag(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(flag_view(answer)))
}

/// The caller's own preferences, defaults filled in: `notifications.channels`
/// (`in_app`, `email`, `webhook`, `slack`), `notifications.min_severity`,
/// `notifications.quiet_hours` (`enabled`, `start`, `end` as HH:MM, `time_zone`).
#[utoipa::path(get, path = "/v1/me/preferences", tag = "settings",
    responses((status = 200, body = SettingsView), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn preferences(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<SettingsView>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .get_preferences(auth.forward(pb::GetPreferencesRequest {}))
        .answer()
        .await?;
    Ok(Json(settings_view(answer)?))
}

/// Changes the caller's own preferences with a JSON merge patch; versioned like the
/// tenant's settings.
#[utoipa::path(patch, path = "/v1/me/preferences", tag = "settings",
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = SettingsView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn patch_preferences(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SettingsView>, ApiError> {
    let request = patch_request(&headers, &body)?;
    let answer = gateway
        .settings
        .clone()
        .patch_preferences(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(settings_view(answer)?))
}

/// A secret by name and version: never its value.
#[derive(Serialize, ToSchema)]
pub struct SecretView {
    name: String,
    /// How many times it was set.
    version: i64,
    updated_by: String,
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretList {
    secrets: Vec<SecretView>,
}

/// A secret's new value. It is sealed at rest and never shown again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    value: String,
}

fn secret_view(s: pb::SecretInfo) -> SecretView {
    SecretView {
        name: s.name,
        version: s.version,
        updated_by: s.changed_by,
        updated_at: rfc3339_ms(s.changed_at_ms),
    }
}

/// The tenant's secrets by name and version (`settings:read`); values are never shown.
#[utoipa::path(get, path = "/v1/settings/secrets", tag = "settings",
    responses((status = 200, body = SecretList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn secrets(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<SecretList>, ApiError> {
    let answer = gateway
        .settings
        .clone()
        .list_secrets(auth.forward(pb::ListSecretsRequest {}))
        .answer()
        .await?;
    Ok(Json(SecretList {
        secrets: answer.secrets.into_iter().map(secret_view).collect(),
    }))
}

/// Sets a secret (`settings:write`): sealed under the master key, bound to the tenant
/// and name, write-only (no route reads it back; the services that use it read it over
/// gRPC with a service token). Audited by name and version, never the value.
#[utoipa::path(put, path = "/v1/settings/secrets/{name}", tag = "settings",
    params(("name" = String, Path, description = "1 to 64 of A-Z, a-z, 0-9, `_`, `.`, `-`")),
    request_body = PutSecret,
    responses((status = 200, body = SecretView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put_secret(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<SecretView>, ApiError> {
    // Read here, not by the JSON extractor: its error text could quote the value.
    let value = serde_json::from_slice::<PutSecret>(&body)
        .map_err(|_| ApiError::validation("value", "send {\"value\": \"<the secret>\"}"))?
        .value;
    let request = pb::PutSecretRequest {
        name,
        value: value.into_bytes(),
    };
    let answer = gateway
        .settings
        .clone()
        .put_secret(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(secret_view(answer)))
}

/// Removes a secret for good (`settings:write`).
#[utoipa::path(delete, path = "/v1/settings/secrets/{name}", tag = "settings",
    params(("name" = String, Path)),
    responses((status = 204, description = "removed"), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_secret(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    gateway
        .settings
        .clone()
        .delete_secret(auth.forward(pb::DeleteSecretRequest { name }))
        .answer()
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
