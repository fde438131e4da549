//! `agent.audit` records: who did what to which resource, and how it ended. One shape
//! for every service, so a reader of the topic (analytics, an auditor's export) parses
//! one thing:
//!
//! ```json
//! {"actor": "<subject>", "resource": {"type": "...", "id": "..." | null},
//!  "action": "...", "outcome": "success" | "failure" | "allowed" | "denied", ...}
//! ```
//!
//! plus what the kind of record adds (`actor_tenant`, `score`, `hash`). Never a
//! password, secret, token, key or the text a decision was about.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::infra::events::{Envelope, EventBus, EventsError, topics};
use crate::tenant::TenantId;

/// How the audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// A decision that let something through.
    Allowed,
    /// A decision that stopped something.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// One audit record, built up and then published (or put in an outbox as an
/// [`Envelope`]).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    service: &'static str,
    kind: String,
    tenant: TenantId,
    actor: Value,
    subject: Option<String>,
    resource: (String, Option<String>),
    action: String,
    outcome: Outcome,
    extra: Map<String, Value>,
}

impl AuditRecord {
    /// `actor` did something in `tenant`, recorded by `service` as `kind` (say
    /// `identity.user_changed`). A successful action on nothing in particular until
    /// told otherwise.
    pub fn new(
        service: &'static str,
        kind: impl Into<String>,
        tenant: TenantId,
        actor: Option<&str>,
    ) -> Self {
        Self {
            service,
            kind: kind.into(),
            tenant,
            actor: actor.map_or(Value::Null, |a| Value::String(a.to_owned())),
            subject: actor.map(str::to_owned),
            resource: (String::new(), None),
            action: String::new(),
            outcome: Outcome::Success,
            extra: Map::new(),
        }
    }

    /// What `principal` did, in their own tenant.
    pub fn by(service: &'static str, kind: impl Into<String>, principal: &Principal) -> Self {
        Self::new(
            service,
            kind,
            principal.tenant.clone(),
            Some(&principal.subject),
        )
    }

    /// The resource acted on: its type and, when it has one, its id.
    pub fn on(mut self, resource_type: &str, id: Option<&str>) -> Self {
        self.resource = (resource_type.to_owned(), id.map(str::to_owned));
        self
    }

    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The event's subject (whom it is about, for partitioned readers); the actor by
    /// default.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// A field this kind of record adds beside the common ones.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The record as the event published on `agent.audit`.
    pub fn envelope(&self) -> Envelope {
        let mut data = Map::new();
        data.insert("actor".into(), self.actor.clone());
        data.insert(
            "resource".into(),
            serde_json::json!({ "type": self.resource.0, "id": self.resource.1 }),
        );
        data.insert("action".into(), Value::String(self.action.clone()));
        data.insert(
            "outcome".into(),
            Value::String(self.outcome.as_str().into()),
        );
        for (key, value) in &self.extra {
            data.insert(key.clone(), value.clone());
        }
        let event = Envelope::new(
            self.kind.clone(),
            self.service,
            self.tenant.clone(),
            Value::Object(data),
        );
        match &self.subject {
            Some(subject) => event.with_subject(subject.clone()),
            None => event,
        }
    }

    /// Publishes the record on `agent.audit`, keyed by tenant. The action has already
    /// happened, so a failure to publish is logged, not returned.
    pub async fn publish(self, events: &EventBus) {
        let kind = self.kind.clone();
        if let Err(e) = self.publish_durably(events).await {
            tracing::error!(error = %e, kind, "an audit record was not published");
        }
    }

    /// Publishes the record on `agent.audit`, keyed by tenant; Ok once the bus holds it
    /// durably, for an action that waits for its record.
    pub async fn publish_durably(self, events: &EventBus) -> Result<(), EventsError> {
        events
            .publish(topics::AUDIT, self.tenant.as_str(), &self.envelope())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_has_the_one_shape_and_what_its_kind_adds() {
        let tenant = TenantId::parse("acme").unwrap();
        let event = AuditRecord::new("policy", "policy.decision", tenant, Some("u1"))
            .on("tool", Some("search"))
            .action("policy.evaluate:tool")
            .outcome(Outcome::Denied)
            .with("score", 80)
            .envelope();
        assert_eq!(event.kind, "policy.decision");
        assert_eq!(event.source, "policy");
        assert_eq!(event.subject.as_deref(), Some("u1"));
        assert_eq!(
            event.data,
            serde_json::json!({
                "actor": "u1",
                "resource": { "type": "tool", "id": "search" },
                "action": "policy.evaluate:tool",
                "outcome": "denied",
                "score": 80,
            })
        );
    }
}
