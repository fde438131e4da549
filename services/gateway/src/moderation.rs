//! Moderation of what users send to models: the policy service decides; a refusal is a
//! 403 naming what was flagged and why, and counts a strike against the user in the
//! shared cache. Past `MAX_STRIKES` in a day the user's prompts are refused outright
//! until the window ends. `moderation:bypass` skips all of it.

use std::time::Duration;

use somagent_common::auth::Capability;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::Cache;
use somagent_common::proto::policy::v1 as pb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;

use crate::api::Authenticated;

/// Refusals a user may collect in a window before every prompt is refused.
pub const MAX_STRIKES: i64 = 10;
const WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
pub struct Moderation {
    policy: PolicyServiceClient<tonic::transport::Channel>,
    cache: Cache,
}

fn strikes_key(tenant: &str, subject: &str) -> String {
    format!("moderation:strikes:{}:{tenant}:{subject}", tenant.len())
}

impl Moderation {
    pub fn new(policy: PolicyServiceClient<tonic::transport::Channel>, cache: Cache) -> Self {
        Self { policy, cache }
    }

    /// Ok if `text` may go to a model on behalf of `auth`.
    pub async fn check_prompt(
        &self,
        auth: &Authenticated,
        text: &str,
        session_id: &str,
    ) -> Result<(), ApiError> {
        if auth.principal.can(Capability::ModerationBypass) {
            return Ok(());
        }
        let key = strikes_key(auth.principal.tenant.as_str(), &auth.principal.subject);
        let strikes = self
            .cache
            .get(&key)
            .await
            .map_err(|e| ApiError::unavailable("moderation cannot be checked right now", e))?
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
        let decision = self
            .policy
            .clone()
            .evaluate(auth.forward(request))
            .await?
            .into_inner();
        if decision.allowed {
            return Ok(());
        }
        let strikes = self
            .cache
            .incr(&key, 1, WINDOW)
            .await
            .map_err(|e| ApiError::unavailable("moderation cannot be checked right now", e))?;
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
