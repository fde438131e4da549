//! Moderation of what users send to models, wherever it comes in (the gateway's routes,
//! async inference on the bus): the policy service decides; a refusal is a 403 naming
//! what was flagged and why, and counts a strike against the user in the shared cache.
//! Past [`MAX_STRIKES`] in a day the user's prompts are refused outright until the
//! window ends. `moderation:bypass` skips all of it. One implementation, so strikes
//! count the same whichever way a prompt came.

use std::time::Duration;

use crate::auth::grpc::with_bearer;
use crate::auth::{Capability, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::infra::cache::Cache;
use crate::proto::policy::v1 as pb;
use crate::proto::policy::v1::policy_service_client::PolicyServiceClient;

/// Refusals a user may collect in a window before every prompt is refused.
pub const MAX_STRIKES: i64 = 10;
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The cache key of a user's strikes.
fn strikes_key(tenant: &str, subject: &str) -> String {
    format!("moderation:strikes:{}:{tenant}:{subject}", tenant.len())
}

#[derive(Clone)]
pub struct PromptModeration {
    policy: PolicyServiceClient<crate::grpc_channel::Channel>,
    cache: Cache,
}

impl PromptModeration {
    pub fn new(policy: PolicyServiceClient<crate::grpc_channel::Channel>, cache: Cache) -> Self {
        Self { policy, cache }
    }

    /// Ok if `text` may go to a model for `principal`, asked with `token`.
    pub async fn check(
        &self,
        principal: &Principal,
        token: &str,
        text: &str,
        session_id: &str,
    ) -> Result<(), ApiError> {
        if principal.can(Capability::ModerationBypass) {
            return Ok(());
        }
        let key = strikes_key(principal.tenant.as_str(), &principal.subject);
        let unavailable = |e| ApiError::unavailable("moderation cannot be checked right now", e);
        let strikes = self
            .cache
            .get(&key)
            .await
            .map_err(unavailable)?
            .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        if strikes >= MAX_STRIKES {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "too many prompts broke the policy today; ask an admin of your tenant",
            )
            .with_details(serde_json::json!({ "strikes": strikes })));
        }
        let request = pb::EvaluateRequest {
            action: "prompt".into(),
            text: text.to_owned(),
            tool: String::new(),
            session_id: session_id.to_owned(),
        };
        // A policy service that cannot answer denies: the status becomes the problem.
        let decision = self
            .policy
            .clone()
            .evaluate(with_bearer(token, tonic::Request::new(request)))
            .await
            .map_err(|status| {
                let error = ApiError::from(status);
                match error.code {
                    ErrorCode::Forbidden | ErrorCode::Unauthorized | ErrorCode::RateLimited => {
                        error
                    }
                    _ => ApiError::unavailable("moderation cannot be checked right now", error),
                }
            })?
            .into_inner();
        if decision.allowed {
            return Ok(());
        }
        let strikes = self
            .cache
            .incr(&key, 1, WINDOW)
            .await
            .map_err(unavailable)?;
        tracing::warn!(score = decision.score, rules = ?decision.rule_ids, strikes, "a prompt was refused by policy");
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "the prompt breaks this tenant's policy",
        )
        .with_details(serde_json::json!({
            "flagged": decision.flagged,
            "reasons": decision.reasons,
            "rule_ids": decision.rule_ids,
            "score": decision.score,
            "severity": decision.severity,
            "strikes": strikes,
            "constitution_hash": decision.constitution_hash,
        })))
    }
}
