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
    let data = serde_json::json!({
        "actor": actor.subject,
        "actor_tenant": actor.tenant,
        "resource": { "type": resource_type, "id": resource_id },
        "action": action,
        "outcome": "success",
    });
    publish(
        events,
        tenant,
        &format!("identity.{resource_type}_changed"),
        &actor.subject,
        data,
    )
    .await;
}

/// Publishes a login attempt on a known tenant: who, how, and whether it succeeded.
/// Never the password, code or token.
pub async fn record_login(
    events: &EventBus,
    tenant: &str,
    user_id: Option<&str>,
    username: &str,
    grant: &str,
    succeeded: bool,
) {
    let data = serde_json::json!({
        "actor": user_id,
        "username": username,
        "resource": { "type": "session", "id": null },
        "action": format!("login:{grant}"),
        "outcome": if succeeded { "success" } else { "failure" },
    });
    publish(
        events,
        tenant,
        "identity.login",
        user_id.unwrap_or(username),
        data,
    )
    .await;
}

/// Publishes that a person of an external issuer was provisioned as (or brought up to
/// date on) user `user_id` of `tenant`: the issuer vouched, so it is the actor. Never
/// the token.
pub async fn record_provisioning(
    events: &EventBus,
    tenant: &str,
    user_id: &str,
    issuer: &str,
    action: &str,
    roles: &[&str],
) {
    let data = serde_json::json!({
        "actor": format!("issuer:{issuer}"),
        "issuer": issuer,
        "resource": { "type": "user", "id": user_id },
        "action": action,
        "roles": roles,
        "outcome": "success",
    });
    publish(events, tenant, "identity.user_provisioned", user_id, data).await;
}

async fn publish(
    events: &EventBus,
    tenant: &str,
    kind: &str,
    subject: &str,
    data: serde_json::Value,
) {
    let Ok(tenant) = TenantId::parse(tenant.to_owned()) else {
        return;
    };
    let event =
        Envelope::new(kind, "identity", tenant.clone(), data).with_subject(subject.to_owned());
    if let Err(e) = events.publish(topics::AUDIT, tenant.as_str(), &event).await {
        tracing::error!(error = %e, kind, "an audit event was not published");
    }
}
