//! Token cutoffs: when a tenant is suspended or deleted, or a user is disabled, deleted,
//! given new roles or a new password, every access token issued before that moment
//! stops working at once, everywhere. The cutoff is a unix time (ms) in the shared cache that
//! every verifier reads with the revocation list; it outlives the longest access token.

use std::time::Duration;

use somagent_common::auth::{
    LEEWAY_SECS, api_key_revocation_key, subject_cutoff_key, tenant_cutoff_key,
};
use somagent_common::error::ApiError;
use somagent_common::infra::cache::Cache;
use somagent_common::tenant::TenantId;

use crate::tokens::ACCESS_TOKEN_TTL_SECS;

#[derive(Clone)]
pub struct TokenCutoffs {
    cache: Cache,
}

impl TokenCutoffs {
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }

    /// Voids the tenant's tokens issued before now.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<(), ApiError> {
        self.set(&tenant_cutoff_key(tenant.as_str())).await
    }

    /// Voids the user's tokens issued before now.
    pub async fn subject(&self, tenant: &TenantId, subject: &str) -> Result<(), ApiError> {
        self.set(&subject_cutoff_key(tenant.as_str(), subject))
            .await
    }

    /// Voids the tokens already obtained with the API key `id` (the key itself is
    /// refused from now on by its revocation in the store).
    pub async fn api_key(&self, id: &str) -> Result<(), ApiError> {
        self.set(&api_key_revocation_key(id)).await
    }

    /// Called before the change is stored: if the cutoff cannot be written the change
    /// is refused, so no old token outlives it.
    async fn set(&self, key: &str) -> Result<(), ApiError> {
        // Milliseconds: a token's `jti` (UUIDv7) tells its issue time to the ms, so a
        // login a moment after the change is not caught by it.
        let now = somagent_common::clock::unix_now_ms();
        let ttl = Duration::from_secs((ACCESS_TOKEN_TTL_SECS + LEEWAY_SECS as i64 + 1) as u64);
        self.cache
            .set(key, now.to_string().as_bytes(), Some(ttl))
            .await
            .map_err(|e| ApiError::unavailable("the change cannot be applied right now", e))
    }
}
