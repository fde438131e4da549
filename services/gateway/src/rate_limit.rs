//! Request rate limits per tenant and per API key, counted in the shared cache so every
//! gateway replica enforces the same budget (Redis when distributed). Fixed one-minute
//! windows; over the limit is a 429 with `Retry-After`. A cache that cannot be read
//! refuses: the limit fails closed, like the verifier.

use std::time::Duration;

use somagent_common::auth::Principal;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::Cache;

const WINDOW: Duration = Duration::from_secs(60);

/// Requests per minute (`gateway.rate_limit_tenant`, `gateway.rate_limit_api_key`);
/// `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_tenant: i64,
    pub per_api_key: i64,
}

#[derive(Clone)]
pub struct RateLimiter {
    cache: Cache,
    limits: RateLimits,
}

impl RateLimiter {
    pub fn new(cache: Cache, limits: RateLimits) -> Self {
        Self { cache, limits }
    }

    /// Counts one request of `principal` (made with the API key whose public prefix is
    /// `api_key`, if any) and refuses it if a window is over its limit.
    pub async fn admit(
        &self,
        principal: &Principal,
        api_key: Option<&str>,
    ) -> Result<(), ApiError> {
        let tenant = principal.tenant.as_str();
        let mut counters = vec![(
            format!("ratelimit:req:tenant:{tenant}"),
            self.limits.per_tenant,
            "this tenant",
        )];
        if let Some(prefix) = api_key {
            counters.push((
                format!("ratelimit:req:key:{tenant}:{prefix}"),
                self.limits.per_api_key,
                "this API key",
            ));
        }
        for (key, limit, whose) in counters {
            if limit == 0 {
                continue;
            }
            let count = self.cache.incr(&key, 1, WINDOW).await.map_err(|e| {
                ApiError::unavailable("the rate limit cannot be checked right now", e)
            })?;
            if count > limit {
                let wait = self.cache.ttl(&key).await.ok().flatten().unwrap_or(WINDOW);
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("too many requests for {whose}; try again later"),
                )
                .with_details(serde_json::json!({ "limit_per_minute": limit }))
                .retry_after(wait.as_secs().max(1)));
            }
        }
        Ok(())
    }
}
