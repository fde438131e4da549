//! Who may do what, and proof of who is asking.
//!
//! - [`Role`], [`Capability`]: one table, read by the gateway (route checks), identity
//!   (tokens, API key scopes) and every service (checks on internal calls).
//! - [`Principal`], [`Claims`]: who a request acts as, and the built-in issuer's
//!   access-token claims.
//! - [`Verifier`]: the one token verifier (JWKS by discovery, rotation, revocation).
//! - [`SigningKey`]: the built-in issuer's Ed25519 keys.

/// The `aud` of the built-in issuer's access tokens: the platform's API.
pub const TOKEN_AUDIENCE: &str = "somagent";

/// The `aud` of a service token meant for `service` alone (`somagent:slm`): the callee
/// accepts it, every other service refuses it.
pub fn service_audience(service: &str) -> String {
    format!("{TOKEN_AUDIENCE}:{service}")
}

mod external;
pub mod grpc;
mod keys;
mod principal;
mod roles;
mod service_credential;
mod service_tokens;
mod verifier;

pub use external::{ACCESS_TOKEN_TYPE, AMR_FEDERATED, external_issuers_from_env};
pub use keys::{KeyError, SigningKey, jwks, verify_ed25519};
pub use principal::{AMR_API_KEY, Actor, Claims, Principal, grants};
pub use roles::{Capability, Role};
pub use service_credential::{
    ISSUER_KEY_FILE, SERVICE_KEY_HEADER, ServiceCredential, ServiceIssuerKey,
};
pub use service_tokens::ServiceTokens;
pub use verifier::{
    Audience, AuthError, ClaimMapping, LEEWAY_SECS, REFRESH_COOLDOWN, TrustedIssuer, Verifier,
    api_key_revocation_key, builtin_mapping, revocation_key, subject_cutoff_key, tenant_cutoff_key,
};

/// The platform's own issuer as `service` trusts it: identity's keys, fetched from
/// identity's internal JWKS endpoint; users' tokens (`somagent`) and service tokens
/// meant for `service` itself (`somagent:<service>`), never one meant for another.
pub fn builtin_issuer(
    config: &crate::config::CommonConfig,
    service: &crate::service::ServiceSpec,
) -> TrustedIssuer {
    TrustedIssuer {
        issuer: config.issuer(),
        audience: Audience::from(TOKEN_AUDIENCE).or(service_audience(service.name)),
        jwks_uri: Some(format!(
            "{}/.well-known/jwks.json",
            config.endpoint(&crate::service::IDENTITY)
        )),
        mapping: builtin_mapping(),
    }
}
