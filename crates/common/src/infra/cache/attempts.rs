//! Limits on attempts that may fail (logins, codes): each attempt is counted with one
//! atomic increment *before* the work it guards, and refused once the window's count
//! passes the limit. Counting first is what makes the limit hold under concurrency:
//! a read-then-check-then-increment lets every parallel guess through before any is
//! counted. An attempt that succeeds is forgiven (counted back), so only failures and
//! attempts still in flight use up the limit.

use std::time::Duration;

use super::Cache;
use crate::error::{ApiError, ErrorCode};

#[derive(Clone)]
pub struct AttemptLimit {
    cache: Cache,
    limit: i64,
    window: Duration,
}

/// One admitted attempt; [`Attempt::succeeded`] gives its count back.
#[must_use = "an attempt that succeeded must be forgiven"]
pub struct Attempt {
    cache: Cache,
    key: String,
}

impl AttemptLimit {
    /// At most `limit` failed (or unfinished) attempts per key per `window`.
    pub fn new(cache: Cache, limit: i64, window: Duration) -> Self {
        Self {
            cache,
            limit,
            window,
        }
    }

    /// Counts an attempt at `key`, or refuses it with 429 and `Retry-After` if the
    /// window's attempts are used up. A cache that cannot count refuses too: the limit
    /// fails closed.
    pub async fn admit(&self, key: String) -> Result<Attempt, ApiError> {
        let count =
            self.cache.incr(&key, 1, self.window).await.map_err(|e| {
                ApiError::unavailable("attempt limits cannot be checked right now", e)
            })?;
        if count > self.limit {
            let wait = self
                .cache
                .ttl(&key)
                .await
                .ok()
                .flatten()
                .unwrap_or(self.window);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many failed attempts; try again later",
            )
            .retry_after(wait.as_secs().max(1)));
        }
        Ok(Attempt {
            cache: self.cache.clone(),
            key,
        })
    }
}

impl Attempt {
    /// The attempt succeeded (or failed for a reason that is no guess, such as a missing
    /// field): it stops counting against the limit.
    pub async fn succeeded(self) {
        if let Err(e) = self.cache.incr(&self.key, -1, Duration::from_secs(1)).await {
            tracing::warn!(error = %e, "cannot give back a counted attempt");
        }
    }

    /// The attempt failed: it keeps counting until the window ends.
    pub fn failed(self) {}

    /// Settles the attempt by its outcome: a refused credential keeps counting,
    /// anything else is given back.
    pub async fn settle<T>(self, outcome: &Result<T, ApiError>) {
        match outcome {
            Err(e) if e.code == ErrorCode::Unauthorized => self.failed(),
            _ => self.succeeded().await,
        }
    }
}
