//! `Authenticated`: a handler parameter that is the verified caller, or a 401 with a
//! JSON problem and `WWW-Authenticate` (RFC 6750).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use somagent_common::auth::Principal;
use somagent_common::error::{ApiError, ErrorCode};

use crate::Gateway;

pub struct Authenticated(pub Principal);

/// A refused credential: the problem body plus the challenge header.
pub struct Unauthenticated {
    reason: String,
    had_token: bool,
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
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
    type Rejection = Unauthenticated;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Gateway,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Unauthenticated {
                reason: "this needs a bearer token".into(),
                had_token: false,
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
            .ok_or_else(|| Unauthenticated {
                reason: "the Authorization header is not a bearer token".into(),
                had_token: true,
            })?;
        let principal = gateway
            .verifier
            .verify(token)
            .await
            .map_err(|e| Unauthenticated {
                reason: e.0,
                had_token: true,
            })?;
        tracing::Span::current().record("tenant", principal.tenant.as_str());
        Ok(Self(principal))
    }
}
