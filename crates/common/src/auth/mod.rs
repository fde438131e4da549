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

pub mod grpc;
mod keys;
mod principal;
mod roles;
mod service_key;
mod verifier;

pub use keys::{KeyError, SigningKey, jwks, verify_ed25519};
pub use principal::{Actor, Claims, Principal, grants};
pub use roles::{Capability, Role};
pub use service_key::{SERVICE_KEY_HEADER, ServiceKey};
pub use verifier::{
    AuthError, ClaimMapping, LEEWAY_SECS, REFRESH_COOLDOWN, TrustedIssuer, Verifier,
    builtin_mapping, revocation_key, subject_cutoff_key, tenant_cutoff_key,
};

/// The platform's own issuer as every service trusts it: identity's keys, fetched from
/// identity's internal JWKS endpoint.
pub fn builtin_issuer(config: &crate::config::CommonConfig) -> TrustedIssuer {
    TrustedIssuer {
        issuer: config.issuer(),
        audience: TOKEN_AUDIENCE.into(),
        jwks_uri: Some(format!(
            "{}/.well-known/jwks.json",
            config.endpoint(&crate::service::IDENTITY)
        )),
        mapping: builtin_mapping(),
    }
}
