//! Revoked access tokens: a deny-list entry per token id in the shared cache, kept
//! until the token would have expired, so every verifier (every replica, every
//! service) refuses it at once. Each revocation is an `agent.audit` event.

use std::time::Duration;

use somagent_common::audit::AuditRecord;
use somagent_common::auth::{Principal, revocation_key};
use somagent_common::error::ApiError;
use somagent_common::infra::cache::Cache;
use somagent_common::infra::events::EventBus;

#[derive(Clone)]
pub struct Revocations {
    cache: Cache,
    events: EventBus,
}

impl Revocations {
    pub fn new(cache: Cache, events: EventBus) -> Self {
        Self { cache, events }
    }

    pub async fn revoke(&self, principal: &Principal) -> Result<(), ApiError> {
        let Some(jti) = &principal.token_id else {
            return Ok(());
        };
        let now = somagent_common::clock::unix_now();
        let left = principal.expires_at.map_or(0, |exp| exp - now).max(1) as u64;
        // A little past expiry, so clock skew cannot bring the token back.
        let ttl = Duration::from_secs(left + somagent_common::auth::LEEWAY_SECS + 1);
        self.cache
            .set(&revocation_key(jti), b"1", Some(ttl))
            .await
            .map_err(|e| ApiError::unavailable("the token cannot be revoked right now", e))?;
        AuditRecord::by("gateway", "auth.token_revoked", principal)
            .on("access_token", Some(jti))
            .action("revoke")
            .publish(&self.events)
            .await;
        tracing::info!(jti, "access token revoked");
        Ok(())
    }
}
