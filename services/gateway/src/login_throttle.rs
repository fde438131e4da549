//! Failed-login limits per client address on the token endpoint, kept in the cache so
//! every gateway replica shares them (Redis when distributed). Each attempt is counted
//! before identity checks the password, so parallel guesses cannot all slip through;
//! identity limits each account the same way where the password is verified.

use std::net::IpAddr;
use std::time::Duration;

use somagent_common::error::ApiError;
use somagent_common::infra::cache::{Attempt, AttemptLimit, Cache};

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Failed logins allowed per client address per window.
pub const PER_ADDRESS: i64 = 20;

#[derive(Clone)]
pub struct LoginThrottle {
    per_address: AttemptLimit,
}

impl LoginThrottle {
    pub fn new(cache: Cache) -> Self {
        Self {
            per_address: AttemptLimit::new(cache, PER_ADDRESS, WINDOW),
        }
    }

    /// Counts a login attempt from `ip`, or refuses it (429 with `Retry-After`).
    pub async fn admit(&self, ip: IpAddr) -> Result<Attempt, ApiError> {
        self.per_address
            .admit(format!(
                "ratelimit:login:ip:{}",
                crate::client_address::bucket_of(ip)
            ))
            .await
    }
}
