//! Proof asked again of a logged-in user before a change to how their account logs in
//! (a new password, MFA on or off, a new API key): their password, and for turning MFA
//! off a current code. A stolen access token alone proves none of it, and guessing is
//! bounded: every check is counted per user before it is made, like logins are.

use std::time::Duration;

use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::{AttemptLimit, Cache};

use crate::domain::password;
use crate::store::{IdentityStore, MfaState, User};

/// Failed proofs allowed per user per window.
pub const ATTEMPTS: i64 = 5;
const WINDOW: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Reauth {
    store: IdentityStore,
    attempts: AttemptLimit,
}

impl Reauth {
    pub fn new(store: IdentityStore, cache: Cache) -> Self {
        Self {
            store,
            attempts: AttemptLimit::new(cache, ATTEMPTS, WINDOW),
        }
    }

    fn key(user: &User) -> String {
        format!("ratelimit:reauth:{}:{}", user.tenant_id, user.id)
    }

    /// Ok if `presented` is the user's password; a missing one is a 422 naming `field`,
    /// a wrong one a 403 (the caller is logged in: this is not a login failure).
    pub async fn password(
        &self,
        user: &User,
        presented: Option<&str>,
        field: &str,
    ) -> Result<(), ApiError> {
        let presented = presented.filter(|p| !p.is_empty()).ok_or_else(|| {
            ApiError::validation(field, "your current password is required for this")
        })?;
        let attempt = self.attempts.admit(Self::key(user)).await?;
        let candidate = presented.to_owned();
        let hash = user.password_hash.clone();
        let matches = tokio::task::spawn_blocking(move || password::verify(&candidate, &hash))
            .await
            .map_err(ApiError::internal)?;
        if matches {
            attempt.succeeded().await;
            Ok(())
        } else {
            attempt.failed();
            Err(ApiError::new(ErrorCode::Forbidden, "the password is wrong")
                .with_details(serde_json::json!({ "field": field })))
        }
    }

    /// Ok if `code` is the user's current TOTP code or one of their recovery codes
    /// (spending it); a wrong or used one is a 403.
    pub async fn code(&self, user: &User, mfa: &MfaState, code: &str) -> Result<(), ApiError> {
        if code.is_empty() {
            return Err(ApiError::validation("code", "a current code is required"));
        }
        let attempt = self.attempts.admit(Self::key(user)).await?;
        if crate::tokens::second_factor(&self.store, &user.id, mfa, code).await? {
            attempt.succeeded().await;
            Ok(())
        } else {
            attempt.failed();
            Err(
                ApiError::new(ErrorCode::Forbidden, "the code is wrong or used")
                    .with_details(serde_json::json!({ "field": "code" })),
            )
        }
    }
}
