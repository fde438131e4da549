//! The built-in issuer's public face: the OAuth 2.0 token endpoint (RFC 6749, form or
//! JSON), the caller's principal, and the discovery documents.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::identity::v1 as pb;

use super::Authenticated;
use super::forward::Answer;
use super::views::{Me, Problem, SigningKey, Status, Token};
use crate::Gateway;

/// A token request (RFC 6749 §4.3, §4.4, §6), form-encoded or JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Read field by field from the body; here to be documented.
pub struct TokenRequest {
    /// `password`, `refresh_token` or `client_credentials`.
    grant_type: String,
    /// `password`: the tenant's slug.
    tenant: Option<String>,
    /// `password`.
    username: Option<String>,
    /// `password`.
    password: Option<String>,
    /// `password`, once MFA is on: the current 6-digit code.
    totp: Option<String>,
    /// `refresh_token`.
    refresh_token: Option<String>,
    /// `client_credentials`: an API key.
    client_secret: Option<String>,
}

/// A revocation request (RFC 7009), form-encoded or JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Read from the body; here to be documented.
pub struct RevokeRequest {
    /// An access token or a refresh token.
    token: String,
}

/// The most a token request may carry.
const MAX_TOKEN_REQUEST: usize = 16 * 1024;

/// The OAuth 2.0 token endpoint: `grant_type=password` with `tenant` (the tenant's
/// slug), `username`, `password` and, once MFA is on, `totp`; `refresh_token` with
/// `refresh_token` (rotated: a reused one revokes the login); `client_credentials`
/// with an API key as `client_secret`. Failed logins are limited per address and per
/// account (429 with `Retry-After`).
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, body = Token), (status = 400, body = Problem),
        (status = 401, description = "invalid credentials", body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 429, description = "too many failed logins", body = Problem),
    ))]
pub async fn token(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = token_request_fields(&headers, &body, "token request")?;
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let request = pb::IssueTokenRequest {
        grant_type: field("grant_type"),
        username: field("username"),
        password: field("password"),
        tenant: field("tenant"),
        totp: field("totp"),
        client_id: field("client_id"),
        client_secret: field("client_secret"),
        refresh_token: field("refresh_token"),
        scope: field("scope"),
    };
    let attempt = if request.grant_type == "password" {
        let client = gateway.trusted_proxies.client(peer.ip(), &headers);
        Some(gateway.login_throttle.admit(client).await?)
    } else {
        None
    };
    let issued = gateway.identity.clone().issue_token(request).answer().await;
    if let Some(attempt) = attempt {
        attempt.settle(&issued).await;
    }
    let issued = issued?;
    let mut response = Json(Token::from(issued)).into_response();
    // RFC 6749 §5.1: token responses must not be cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The fields of a token or revocation request (`what`, for the error), refused when
/// larger than [`MAX_TOKEN_REQUEST`] before it is parsed.
fn token_request_fields(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<HashMap<String, String>, ApiError> {
    if body.len() > MAX_TOKEN_REQUEST {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the {what} is too large"),
        ));
    }
    form_or_json(headers, body)
}

/// The fields of a form-encoded (RFC 6749) or JSON body; only string values count.
fn form_or_json(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        Ok(map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect())
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Ok(url::form_urlencoded::parse(body).into_owned().collect())
    } else {
        Err(ApiError::bad_request(
            "send the request as application/x-www-form-urlencoded or application/json",
        ))
    }
}

/// The caller as the platform sees them.
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn me(Authenticated { principal, .. }: Authenticated) -> Json<Me> {
    Json(principal.into())
}

/// The built-in issuer's OpenID Provider metadata (the parts that are true of it).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "auth",
    responses((status = 200, description = "OpenID Provider metadata", body = Object)))]
pub async fn openid_configuration(State(gateway): State<Gateway>) -> Json<Value> {
    let issuer = &gateway.issuer;
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/v1/auth/token"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "revocation_endpoint": format!("{issuer}/v1/auth/revoke"),
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant", "username", "roles", "capabilities"],
    }))
}

/// The built-in issuer's public keys (RFC 7517), including the next key ahead of use
/// and retired keys until their tokens expire.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "a JWK set", body = Object), (status = 503, body = Problem)))]
pub async fn jwks(State(gateway): State<Gateway>) -> Result<Json<Value>, ApiError> {
    let answer = gateway
        .identity
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .answer()
        .await?;
    let document: Value = serde_json::from_str(&answer.jwks_json).map_err(ApiError::internal)?;
    Ok(Json(document))
}

/// Token revocation (RFC 7009): an access token is denied everywhere at once until it
/// would have expired; a refresh token ends its login. As the RFC says, a token that
/// is already invalid is not an error: the answer is 200 either way.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth",
    request_body(content(
        (RevokeRequest = "application/x-www-form-urlencoded"),
        (RevokeRequest = "application/json"),
    )),
    responses((status = 200, description = "revoked (or already invalid)"), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn revoke(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = token_request_fields(&headers, &body, "revocation request")?;
    let token = fields.get("token").cloned().unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::validation("token", "is required"));
    }
    if token.starts_with("srt_") {
        // A refresh token: identity revokes the whole login it belongs to.
        let request = pb::RevokeTokenRequest {
            token,
            token_type_hint: "refresh_token".into(),
        };
        gateway
            .identity
            .clone()
            .revoke_token(request)
            .answer()
            .await?;
    } else if let Ok(principal) = gateway.verifier.verify(&token).await {
        gateway.revocations.revoke(&principal).await?;
    }
    let mut response = Json(json!({})).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Rotate the signing key (platform admins): a new key is published at once and signs
/// from a few seconds later on; tokens of the old key stay valid until they expire.
#[utoipa::path(post, path = "/v1/auth/keys/rotate", tag = "auth",
    responses((status = 200, body = SigningKey), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn rotate_keys(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<SigningKey>, ApiError> {
    auth.principal
        .require(somagent_common::auth::Capability::PlatformAdmin)?;
    let answer = gateway
        .identity
        .clone()
        .rotate_signing_key(auth.forward(pb::RotateSigningKeyRequest {}))
        .answer()
        .await?;
    Ok(Json(SigningKey { kid: answer.kid }))
}

/// The platform's status, for the caller's tenant: each service the gateway calls,
/// asked over the gRPC health protocol now, with how long it took to answer.
#[utoipa::path(get, path = "/v1/status", tag = "auth",
    responses((status = 200, body = Status), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn status(State(gateway): State<Gateway>, auth: Authenticated) -> Json<Status> {
    let services = gateway.status.measure().await;
    let state = if services.values().all(|s| s.state == "serving") {
        "ready"
    } else {
        "degraded"
    };
    Json(Status {
        service: "gateway".into(),
        state: state.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        tenant: auth.principal.tenant.as_str().to_owned(),
        checked_at: somagent_common::clock::rfc3339_now(),
        services,
    })
}
