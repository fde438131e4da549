//! The principal a request acts as, and the claims of the platform's access tokens.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Capability, Role};
use crate::error::{ApiError, ErrorCode};
use crate::tenant::TenantId;

/// The claims of an access token from the built-in issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Set on a service token: the service acting for `sub` (RFC 8693 `act`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// How the subject proved who they are (RFC 8176 `amr`): `pwd`, `otp`, or
    /// [`AMR_API_KEY`] for a token obtained with an API key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// On a token obtained with an API key: the key's id, so that revoking the key
    /// revokes the tokens already issued for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The `amr` value of a token obtained with an API key: such a principal may use the
/// API within the key's scopes but never touch the account's credentials.
pub const AMR_API_KEY: &str = "api_key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

/// Who is asking: verified, never taken from a header or a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub tenant: TenantId,
    pub subject: String,
    pub username: Option<String>,
    pub roles: BTreeSet<Role>,
    pub capabilities: BTreeSet<Capability>,
    /// The issuer that vouched for this principal.
    pub issuer: String,
    /// The token's id, for revocation.
    pub token_id: Option<String>,
    /// Unix time the credential stops being valid.
    pub expires_at: Option<i64>,
    /// Unix time the credential was issued.
    pub issued_at: Option<i64>,
    /// The service acting for the subject, on a service token.
    pub actor: Option<String>,
    /// The token's `amr`: how the subject authenticated.
    pub auth_methods: Vec<String>,
    /// The API key the token was obtained with, if it was.
    pub api_key: Option<String>,
    /// The token's `aud`: `somagent` for a user's own token, `somagent:<service>` for a
    /// service token meant for that service alone.
    pub audiences: Vec<String>,
}

impl Principal {
    /// True if this principal came from an API key or acts through a service: it may
    /// use the API but never change a password, MFA or API keys.
    pub fn is_delegated(&self) -> bool {
        self.actor.is_some() || self.auth_methods.iter().any(|m| m == AMR_API_KEY)
    }

    pub fn can(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Ok if the principal holds `capability`, else a 403 problem naming it.
    pub fn require(&self, capability: Capability) -> Result<(), ApiError> {
        if self.can(capability) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs the capability `{}`", capability.as_str()),
            )
            .with_details(serde_json::json!({ "missing_capability": capability.as_str() })))
        }
    }
}

/// Roles and capabilities from their names; unknown names are dropped, not guessed at.
/// With `expand_roles` each role also brings the capabilities it grants (tokens of an
/// external issuer, which know roles only). The built-in issuer's tokens carry their
/// exact capabilities, already narrowed for an API key's scopes, so they are taken as
/// they are.
pub fn grants(
    roles: &[String],
    capabilities: &[String],
    expand_roles: bool,
) -> (BTreeSet<Role>, BTreeSet<Capability>) {
    let roles: BTreeSet<Role> = roles.iter().filter_map(|r| Role::parse(r)).collect();
    let mut caps: BTreeSet<Capability> = capabilities
        .iter()
        .filter_map(|c| Capability::parse(c))
        .collect();
    if expand_roles {
        for role in &roles {
            caps.extend(role.capabilities());
        }
    }
    (roles, caps)
}
