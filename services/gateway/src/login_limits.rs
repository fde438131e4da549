//! Failed-login limits on the token endpoint, kept in the cache so every gateway
//! replica shares them (Redis when distributed). A client address that fails too often
//! is refused for the rest of the window, and so is an account, so neither guessing
//! one password everywhere nor many passwords on one account gets far.

use std::net::IpAddr;
use std::time::Duration;

use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::Cache;

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Failed logins allowed per client address per window.
pub const PER_ADDRESS: i64 = 20;
/// Failed logins allowed per account (tenant + username) per window.
pub const PER_ACCOUNT: i64 = 5;

#[derive(Clone)]
pub struct LoginLimits {
    cache: Cache,
}

fn address_key(ip: IpAddr) -> String {
    format!("ratelimit:login:ip:{ip}")
}

fn account_key(tenant: &str, username: &str) -> String {
    // Lengths first, so `a:b` + `c` and `a` + `b:c` cannot share a counter.
    format!(
        "ratelimit:login:account:{}:{tenant}:{}:{username}",
        tenant.len(),
        username.len()
    )
}

impl LoginLimits {
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }

    /// Refuses with 429 and `Retry-After` if the address or the account is over its
    /// limit. A cache that cannot be read refuses too: the limit fails closed.
    pub async fn check(&self, ip: IpAddr, tenant: &str, username: &str) -> Result<(), ApiError> {
        for (key, limit) in [
            (address_key(ip), PER_ADDRESS),
            (account_key(tenant, username), PER_ACCOUNT),
        ] {
            let failures = self.count(&key).await?;
            if failures >= limit {
                let wait = self.cache.ttl(&key).await.ok().flatten().unwrap_or(WINDOW);
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    "too many failed logins; try again later",
                )
                .retry_after(wait.as_secs().max(1)));
            }
        }
        Ok(())
    }

    /// Counts one failed login against the address and the account.
    pub async fn record_failure(&self, ip: IpAddr, tenant: &str, username: &str) {
        for key in [address_key(ip), account_key(tenant, username)] {
            if let Err(e) = self.cache.incr(&key, 1, WINDOW).await {
                tracing::warn!(error = %e, "cannot count a failed login");
            }
        }
    }

    async fn count(&self, key: &str) -> Result<i64, ApiError> {
        let value =
            self.cache.get(key).await.map_err(|e| {
                ApiError::unavailable("login limits cannot be checked right now", e)
            })?;
        Ok(value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}
