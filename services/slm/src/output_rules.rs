//! The tenant's output rules, fetched from policy (`GetOutputGuard`) and kept for a few
//! seconds per tenant. A short lifetime rather than listening for
//! `constitution.updated`: policy recompiles on that event, and a consumer dropping its
//! copy at the same moment could fetch the old rules again before policy had; a few
//! seconds bound how long a new rule takes to reach streaming answers, and every
//! session turn's final check asks policy itself.
//!
//! Failing to get them is an error, never an unguarded answer (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use somagent_common::auth::grpc::with_bearer;
use somagent_common::auth::{Capability, Principal, ServiceTokens};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::policy::v1 as pb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::service::POLICY;
use somagent_common::tenant::TenantId;

use crate::domain::output_guard::OutputRules;

const FRESH: Duration = Duration::from_secs(5);
const MAX_CACHED: usize = 10_000;

pub struct OutputRuleSource {
    policy: PolicyServiceClient<somagent_common::grpc_channel::Channel>,
    /// slm's own tokens, for a caller that came with a service token meant for slm.
    tokens: ServiceTokens,
    cached: Mutex<HashMap<TenantId, (Instant, Arc<OutputRules>)>>,
}

impl OutputRuleSource {
    pub fn new(
        policy: PolicyServiceClient<somagent_common::grpc_channel::Channel>,
        tokens: ServiceTokens,
    ) -> Self {
        Self {
            policy,
            tokens,
            cached: Mutex::default(),
        }
    }

    /// The rules for `principal`'s tenant; `bearer` is the token the call came with.
    pub async fn for_caller(
        &self,
        principal: &Principal,
        bearer: &str,
    ) -> Result<Arc<OutputRules>, ApiError> {
        let tenant = &principal.tenant;
        if let Some((at, rules)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            && at.elapsed() < FRESH
        {
            return Ok(rules.clone());
        }
        let rules = Arc::new(self.fetch(principal, bearer).await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                "the answer is withheld: this tenant's output policy cannot be loaded right now",
            )
            .with_details(serde_json::json!({ "cause": e.code.as_str() }))
        })?);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() >= MAX_CACHED {
            cached.clear();
        }
        cached.insert(tenant.clone(), (Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// A token to ask policy with for `principal`, who called with `bearer`: a user's
    /// own token is good at policy too; a service token was for slm alone, so slm asks
    /// identity for its own, for policy.
    pub async fn policy_token(
        &self,
        principal: &Principal,
        bearer: &str,
    ) -> Result<String, ApiError> {
        if principal.actor.is_none() {
            return Ok(bearer.to_owned());
        }
        self.tokens
            .for_user(
                &POLICY,
                &principal.tenant,
                &principal.subject,
                &[Capability::PolicyRead.as_str().to_owned()],
            )
            .await
            .map_err(ApiError::from)
    }

    async fn fetch(&self, principal: &Principal, bearer: &str) -> Result<OutputRules, ApiError> {
        let token = self.policy_token(principal, bearer).await?;
        let guard = self
            .policy
            .clone()
            .get_output_guard(with_bearer(
                &token,
                tonic::Request::new(pb::GetOutputGuardRequest {}),
            ))
            .await
            .map_err(|status| {
                tracing::error!(tenant = %principal.tenant, code = ?status.code(), message = status.message(), "the output guard cannot be fetched");
                ApiError::from(status)
            })?
            .into_inner();
        let terms = guard.term_ids.into_iter().zip(guard.terms).collect();
        let patterns = guard.pattern_ids.into_iter().zip(guard.patterns).collect();
        OutputRules::new(terms, patterns).map_err(|e| {
            tracing::error!(tenant = %principal.tenant, error = %e, "the tenant's output patterns do not compile");
            ApiError::internal(e)
        })
    }
}
