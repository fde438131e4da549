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
use crate::Gateway;

/// The most a token request may carry.
const MAX_TOKEN_REQUEST: usize = 16 * 1024;

/// `POST /v1/auth/token`: `grant_type=password` with `tenant` (the tenant's slug),
/// `username`, `password` and, once MFA is on, `totp`; `grant_type=refresh_token` with
/// `refresh_token`; `grant_type=client_credentials` with an API key as `client_secret`.
pub async fn token(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_TOKEN_REQUEST {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the token request is too large",
        ));
    }
    let fields = form_or_json(&headers, &body)?;
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
    let limits = &gateway.login_limits;
    let (tenant, username) = (request.tenant.clone(), request.username.clone());
    if request.grant_type == "password" {
        limits.check(peer.ip(), &tenant, &username).await?;
    }
    let issued = match gateway.identity.clone().issue_token(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            let error = ApiError::from(status);
            if error.code == ErrorCode::Unauthorized {
                limits.record_failure(peer.ip(), &tenant, &username).await;
            }
            return Err(error);
        }
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if !issued.refresh_token.is_empty() {
        body["refresh_token"] = Value::String(issued.refresh_token);
    }
    let mut response = Json(body).into_response();
    // RFC 6749 §5.1: token responses must not be cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
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

/// `GET /v1/me`: the caller as the platform sees them.
pub async fn me(Authenticated { principal, .. }: Authenticated) -> Json<Value> {
    Json(json!({
        "tenant": principal.tenant,
        "subject": principal.subject,
        "username": principal.username,
        "roles": principal.roles,
        "capabilities": principal.capabilities,
    }))
}

/// `GET /.well-known/openid-configuration` (the parts that are true of this issuer).
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

/// `GET /.well-known/jwks.json`: the built-in issuer's public keys, from identity.
pub async fn jwks(State(gateway): State<Gateway>) -> Result<Json<Value>, ApiError> {
    let answer = gateway
        .identity
        .clone()
        .get_jwks(pb::GetJwksRequest {})
        .await?
        .into_inner();
    let document: Value = serde_json::from_str(&answer.jwks_json).map_err(ApiError::internal)?;
    Ok(Json(document))
}

/// `POST /v1/auth/revoke` (RFC 7009): `token=<access token>`. A valid token of this
/// issuer is denied everywhere at once (the deny-list is in the shared cache) until it
/// would have expired anyway. As the RFC says, a token that is already invalid is not
/// an error: the answer is 200 either way, so the endpoint tells nothing about tokens.
pub async fn revoke(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_TOKEN_REQUEST {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the revocation request is too large",
        ));
    }
    let fields = form_or_json(&headers, &body)?;
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
        gateway.identity.clone().revoke_token(request).await?;
    } else if let Ok(principal) = gateway.verifier.verify(&token).await {
        gateway.revocations.revoke(&principal).await?;
    }
    let mut response = Json(json!({})).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /v1/auth/keys/rotate` (platform admins): publishes a new signing key, which
/// signs from a few seconds later on; tokens of the old key stay valid until they expire.
pub async fn rotate_keys(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<Value>, ApiError> {
    auth.principal
        .require(somagent_common::auth::Capability::PlatformAdmin)?;
    let answer = gateway
        .identity
        .clone()
        .rotate_signing_key(auth.forward(pb::RotateSigningKeyRequest {}))
        .await?
        .into_inner();
    Ok(Json(json!({ "kid": answer.kid })))
}

/// `GET /v1/status`: the original's status route, for the caller's tenant.
pub async fn status(auth: Authenticated) -> Json<Value> {
    Json(json!({
        "service": "gateway",
        "state": "ready",
        "version": env!("CARGO_PKG_VERSION"),
        "tenant": auth.principal.tenant,
    }))
}
