//! Every model call is metered: a `billing.usage` event per call (tenant, user, session,
//! model, tokens, cost, latency), durable on the bus before the answer ends, or in the
//! outbox when the bus refuses it or is slow to answer, so it is never lost when the bus
//! is down (`Outbox::deliver`). A failed try is recorded too
//! (`slm.call_failed` on `agent.audit`: the upstream, how it failed, how long it took),
//! for error rates per upstream; it carries no prompt and no answer.

use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;

use crate::domain::chat::TokenUsage;
use crate::domain::pricing::Price;
use crate::domain::profile::Profile;
use crate::upstream::UpstreamError;

/// Who a call was for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub subject: String,
    /// The session the call belongs to, if any.
    pub session: Option<String>,
}

/// One metered call.
#[derive(Debug, Clone)]
pub struct Metered<'a> {
    /// `model` (a chat completion) or `embedding`.
    pub kind: &'a str,
    pub call_id: &'a str,
    pub profile: &'a str,
    pub upstream: &'a str,
    pub model: &'a str,
    pub usage: TokenUsage,
    /// True when the upstream did not report usage and the tokens were counted here.
    pub counted: bool,
    /// The unit prices the cost was computed at, for the ledger to keep.
    pub price: Price,
    pub cost_micros: i64,
    pub currency: &'a str,
    /// From the call's start to its answer's end (retries and fallbacks included).
    pub latency: std::time::Duration,
}

#[derive(Clone)]
pub struct UsageMeter {
    outbox: Outbox,
}

impl UsageMeter {
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    pub async fn record(&self, caller: &Caller, call: Metered<'_>) {
        let data = serde_json::json!({
            "kind": call.kind,
            "call_id": call.call_id,
            "user": caller.subject,
            "session_id": caller.session,
            "profile": call.profile,
            "upstream": call.upstream,
            "model": call.model,
            "prompt_tokens": call.usage.prompt,
            "completion_tokens": call.usage.completion,
            "tokens_counted_by_platform": call.counted,
            "prompt_price_micros_per_1k": call.price.prompt_micros_per_1k,
            "completion_price_micros_per_1k": call.price.completion_micros_per_1k,
            "cost_micros": call.cost_micros,
            "currency": call.currency,
            "latency_ms": u64::try_from(call.latency.as_millis()).unwrap_or(u64::MAX),
        });
        let event = Envelope::new("slm.usage", "slm", caller.tenant.clone(), data)
            .with_subject(caller.subject.clone());
        if let Err(e) = self
            .outbox
            .deliver(topics::BILLING_USAGE, caller.tenant.as_str(), &event)
            .await
        {
            // The bus and then the database refused: nothing more can be done here than
            // to say so.
            tracing::error!(error = %e, call_id = call.call_id, "a usage record could not be stored");
        }
    }

    /// Records a failed try on an upstream. Nothing depends on it but the figures, so
    /// it goes straight to the bus: lost if the bus is down, never holding up the call.
    pub async fn failed(
        &self,
        caller: &Caller,
        kind: &str,
        call_id: &str,
        profile: &Profile,
        error: &UpstreamError,
        took: std::time::Duration,
    ) {
        let data = serde_json::json!({
            "kind": kind,
            "call_id": call_id,
            "user": caller.subject,
            "session_id": caller.session,
            "profile": profile.name,
            "upstream": profile.upstream,
            "failure": error.kind.as_str(),
            "status": error.status,
            "latency_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        });
        let event = Envelope::new("slm.call_failed", "slm", caller.tenant.clone(), data)
            .with_subject(caller.subject.clone());
        if let Err(e) = self
            .outbox
            .events()
            .publish(topics::AUDIT, caller.tenant.as_str(), &event)
            .await
        {
            tracing::warn!(error = %e, call_id, "a failed call's record was not published");
        }
    }
}
