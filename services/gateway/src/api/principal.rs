//! `Authenticated`: a handler parameter that is the verified caller, or a 401 with a
//! JSON problem and `WWW-Authenticate` (RFC 6750). A bearer token is verified here; an
//! `X-API-Key` is exchanged with identity for a short-lived access token first (the
//! `client_credentials` grant), so the services behind see a signed token either way.
//! The exchange happens on every request: a revoked key stops working at once. A token
//! of an external OIDC issuer (Keycloak) is verified here, then exchanged with identity
//! for a platform token (RFC 8693), remembered until shortly before it expires: the
//! services behind trust the platform's own issuer alone.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use somagent_common::auth::Principal;
use somagent_common::error::{ApiError, ErrorCode};

use crate::Gateway;

pub struct Authenticated {
    pub principal: Principal,
    /// The access token the request acts with, forwarded on internal calls.
    pub token: String,
}

impl Authenticated {
    /// `request` carrying this caller's token, for a call to another service.
    pub fn forward<T>(&self, request: T) -> tonic::Request<T> {
        somagent_common::auth::grpc::with_bearer(&self.token, tonic::Request::new(request))
    }
}

/// A refused credential: the problem body plus the challenge header.
pub struct Unauthenticated {
    reason: String,
    had_token: bool,
    /// A refusal that is not a bad credential (a valid external token whose person may
    /// not use the platform: 403; identity unreachable: 503), answered as it is.
    problem: Option<ApiError>,
}

impl Unauthenticated {
    fn invalid(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            had_token: true,
            problem: None,
        }
    }
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        if let Some(problem) = self.problem {
            return problem.into_response();
        }
        let mut response =
            ApiError::new(ErrorCode::Unauthorized, self.reason.clone()).into_response();
        let challenge = if self.had_token {
            // The reason is one of the verifier's fixed phrases: safe in a header.
            format!(
                "Bearer realm=\"somagent\", error=\"invalid_token\", error_description=\"{}\"",
                self.reason
            )
        } else {
            "Bearer realm=\"somagent\"".to_owned()
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl FromRequestParts<Gateway> for Authenticated {
    type Rejection = Response;

    /// The verified caller, counted against their tenant's (and API key's) request
    /// limit.
    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Gateway,
    ) -> Result<Self, Self::Rejection> {
        let (caller, api_key) = authenticate(parts, gateway)
            .await
            .map_err(IntoResponse::into_response)?;
        gateway
            .rate_limit
            .admit(&caller.principal, api_key.as_deref())
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(caller)
    }
}

/// The caller's verified principal and, if they came with an API key, its public
/// prefix.
async fn authenticate(
    parts: &Parts,
    gateway: &Gateway,
) -> Result<(Authenticated, Option<String>), Unauthenticated> {
    if let Some(key) = parts.headers.get("x-api-key") {
        let key = key
            .to_str()
            .map_err(|_| Unauthenticated::invalid("the X-API-Key header is not a key"))?;
        return from_api_key(gateway, key.trim()).await;
    }
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(Unauthenticated {
            reason: "this needs a bearer token or an X-API-Key".into(),
            had_token: false,
            problem: None,
        });
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Unauthenticated::invalid("the Authorization header is not a bearer token")
        })?;
    Ok((from_bearer(gateway, token).await?, None))
}

/// An access token or an API key given some other way than a header (a WebSocket's
/// first message).
pub(super) async fn from_credential(
    gateway: &Gateway,
    credential: &str,
) -> Result<Authenticated, Unauthenticated> {
    if credential.starts_with("sak_") {
        Ok(from_api_key(gateway, credential).await?.0)
    } else {
        from_bearer(gateway, credential).await
    }
}

async fn from_bearer(gateway: &Gateway, token: &str) -> Result<Authenticated, Unauthenticated> {
    let principal = gateway
        .verifier
        .verify(token)
        .await
        .map_err(|e| Unauthenticated::invalid(e.0))?;
    if principal.issuer != gateway.issuer {
        return from_external(gateway, token).await;
    }
    tracing::Span::current().record("tenant", principal.tenant.as_str());
    Ok(Authenticated {
        principal,
        token: token.to_owned(),
    })
}

/// The platform token standing for a verified external token: the one remembered for
/// it, or a fresh exchange with identity, which verifies the external token itself and
/// provisions its person.
async fn from_external(
    gateway: &Gateway,
    external: &str,
) -> Result<Authenticated, Unauthenticated> {
    if let Some(token) = gateway.exchanged.get(external) {
        match gateway.verifier.verify(&token).await {
            Ok(principal) => return Ok(platform_caller(principal, token)),
            // Revoked, or voided by a change to its user: exchange again, which
            // applies the user's current state.
            Err(_) => gateway.exchanged.forget(external),
        }
    }
    let exchange = somagent_common::proto::identity::v1::ExchangeTokenRequest {
        subject_token: external.to_owned(),
        subject_token_type: somagent_common::auth::ACCESS_TOKEN_TYPE.into(),
    };
    let token = match gateway.identity.clone().exchange_token(exchange).await {
        Ok(answer) => answer.into_inner().access_token,
        // identity's refusals of a token are fixed phrases: safe to pass on.
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err(Unauthenticated::invalid(status.message()));
        }
        Err(status) => {
            return Err(Unauthenticated {
                reason: String::new(),
                had_token: true,
                problem: Some(ApiError::from(status)),
            });
        }
    };
    let principal = gateway
        .verifier
        .verify(&token)
        .await
        .map_err(|e| Unauthenticated::invalid(e.0))?;
    if let Some(expires_at) = principal.expires_at {
        gateway.exchanged.put(external, token.clone(), expires_at);
    }
    Ok(platform_caller(principal, token))
}

fn platform_caller(principal: Principal, token: String) -> Authenticated {
    tracing::Span::current().record("tenant", principal.tenant.as_str());
    Authenticated { principal, token }
}

/// Exchanges an API key for a short-lived token (so revocation is immediate) and
/// verifies that.
async fn from_api_key(
    gateway: &Gateway,
    key: &str,
) -> Result<(Authenticated, Option<String>), Unauthenticated> {
    let refused = Unauthenticated::invalid;
    let exchange = somagent_common::proto::identity::v1::IssueTokenRequest {
        grant_type: "client_credentials".into(),
        client_secret: key.to_owned(),
        ..Default::default()
    };
    let token = match gateway.identity.clone().issue_token(exchange).await {
        Ok(answer) => answer.into_inner().access_token,
        Err(status) if status.code() == tonic::Code::Unavailable => {
            return Err(refused("the API key cannot be checked right now"));
        }
        Err(_) => return Err(refused("invalid API key")),
    };
    let authenticated = from_bearer(gateway, &token).await?;
    let prefix = key.split('_').nth(1).map(str::to_owned);
    Ok((authenticated, prefix))
}
