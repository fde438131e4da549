//! identity's `agent.audit` events: who did what to which resource, and the outcome.
//! Never a password, secret, token or key.

use somagent_common::auth::Principal;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::tenant::TenantId;

/// Publishes that `actor` did `action` to `resource_type` `resource_id` in `tenant`.
/// The change has already happened, so a failure to publish is logged, not returned.
pub async fn record(
    events: &EventBus,
    actor: &Principal,
    tenant: &str,
    resource_type: &str,
    resource_id: &str,
    action: &str,
) {
    let Ok(tenant) = TenantId::parse(tenant.to_owned()) else {
        return;
    };
    let event = Envelope::new(
        format!("identity.{resource_type}_changed"),
        "identity",
        tenant.clone(),
        serde_json::json!({
            "actor": actor.subject,
            "actor_tenant": actor.tenant,
            "resource": { "type": resource_type, "id": resource_id },
            "action": action,
            "outcome": "success",
        }),
    )
    .with_subject(actor.subject.clone());
    if let Err(e) = events.publish(topics::AUDIT, tenant.as_str(), &event).await {
        tracing::error!(error = %e, resource_type, action, "changed but the audit event was not published");
    }
}
