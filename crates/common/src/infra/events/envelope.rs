//! The event envelope of DESIGN §6 and the platform's topics.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::tenant::TenantId;

/// The topics of DESIGN §6.
pub mod topics {
    /// Who did what to which resource, and the outcome. Never a token or secret.
    pub const AUDIT: &str = "agent.audit";
    pub const CONVERSATION: &str = "conversation.events";
    pub const WORKFLOW: &str = "workflow.events";
    /// Money-relevant: never dropped, consumed idempotently.
    pub const BILLING_USAGE: &str = "billing.usage";
    pub const CONSTITUTION_UPDATED: &str = "constitution.updated";
    pub const NOTIFICATIONS: &str = "agent.notifications";
    /// A tenant's settings, preferences or flags changed: caches drop the tenant's.
    pub const SETTINGS_UPDATED: &str = "settings.updated";
    pub const TRAINING_AUDIT: &str = "training.audit";
    pub const SLM_REQUESTS: &str = "slm.requests";
    pub const SLM_RESPONSES: &str = "slm.responses";

    pub const ALL: &[&str] = &[
        AUDIT,
        CONVERSATION,
        WORKFLOW,
        BILLING_USAGE,
        CONSTITUTION_UPDATED,
        NOTIFICATIONS,
        SETTINGS_UPDATED,
        TRAINING_AUDIT,
        SLM_REQUESTS,
        SLM_RESPONSES,
    ];
}

/// `{id, type, source, tenant, subject?, time, trace, data}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event; consumers deduplicate on it.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    /// The service that published it.
    pub source: String,
    pub tenant: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// W3C `traceparent` of the span that published it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub data: serde_json::Value,
}

impl Envelope {
    /// A new event, stamped with a time-ordered id, the current time and trace.
    pub fn new(
        kind: impl Into<String>,
        source: impl Into<String>,
        tenant: TenantId,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind: kind.into(),
            source: source.into(),
            tenant,
            subject: None,
            time: OffsetDateTime::now_utc(),
            trace: crate::telemetry::current_traceparent(),
            data,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
}
