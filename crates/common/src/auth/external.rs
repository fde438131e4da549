//! External OIDC issuers (Keycloak first): which ones the platform trusts, and how a
//! token exchanged for one of theirs is marked. The gateway verifies their tokens at
//! the door; identity verifies them again before exchanging one for a platform token,
//! so both read the same list.

use super::TrustedIssuer;

/// The `amr` of a platform token exchanged for an external issuer's token: the person
/// proved who they are to a federated identity provider, not to the platform (the value
/// Microsoft Entra ID uses for a federated assertion).
pub const AMR_FEDERATED: &str = "fed";

/// The token type of an RFC 8693 exchange whose subject token is an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The external issuers of `SOMAGENT_OIDC_ISSUERS` (or its `_FILE`): a JSON list of
/// `{issuer, audience, jwks_uri?, mapping?: {tenant_claim, default_tenant, roles_claim,
/// capabilities_claim, username_claim, tenants, grantable}}`. Keys come by OpenID discovery unless
/// `jwks_uri` is given; roles map to capabilities as the built-in roles do.
pub fn external_issuers_from_env() -> anyhow::Result<Vec<TrustedIssuer>> {
    let Some(raw) = crate::config::secret_from_env("OIDC_ISSUERS")? else {
        return Ok(Vec::new());
    };
    let issuers: Vec<TrustedIssuer> = serde_json::from_str(&raw).map_err(|e| {
        anyhow::anyhow!("configuration: invalid value for `SOMAGENT_OIDC_ISSUERS`: {e}")
    })?;
    Ok(issuers)
}
