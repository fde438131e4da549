//! identity's `agent.audit` records (the shape is `somagent_common::audit`'s): who did
//! what to which resource, and the outcome. Never a password, secret, token or key.

use somagent_common::audit::{AuditRecord, Outcome};
use somagent_common::auth::Principal;
use somagent_common::infra::events::EventBus;
use somagent_common::tenant::TenantId;

const SERVICE: &str = "identity";

/// Publishes that `actor` did `action` to `resource_type` `resource_id` in `tenant`.
/// The change has already happened, so a failure to publish is logged, not returned.
pub async fn record(
    events: &EventBus,
    actor: &Principal,
    tenant: &TenantId,
    resource_type: &str,
    resource_id: &str,
    action: &str,
) {
    AuditRecord::new(
        SERVICE,
        format!("identity.{resource_type}_changed"),
        tenant.clone(),
        Some(&actor.subject),
    )
    .with("actor_tenant", &actor.tenant)
    .on(resource_type, Some(resource_id))
    .action(action)
    .publish(events)
    .await;
}

/// Publishes a login attempt on a known tenant: who, how, and whether it succeeded.
/// Never the password, code or token.
pub async fn record_login(
    events: &EventBus,
    tenant: &TenantId,
    user_id: Option<&str>,
    username: &str,
    grant: &str,
    succeeded: bool,
) {
    AuditRecord::new(SERVICE, "identity.login", tenant.clone(), user_id)
        .subject(user_id.unwrap_or(username))
        .with("username", username)
        .on("session", None)
        .action(format!("login:{grant}"))
        .outcome(if succeeded {
            Outcome::Success
        } else {
            Outcome::Failure
        })
        .publish(events)
        .await;
}

/// Publishes that a person of an external issuer was provisioned as (or brought up to
/// date on) user `user_id` of `tenant`: the issuer vouched, so it is the actor. Never
/// the token.
pub async fn record_provisioning(
    events: &EventBus,
    tenant: &TenantId,
    user_id: &str,
    issuer: &str,
    action: &str,
    roles: &[&str],
) {
    AuditRecord::new(
        SERVICE,
        "identity.user_provisioned",
        tenant.clone(),
        Some(&format!("issuer:{issuer}")),
    )
    .subject(user_id)
    .with("issuer", issuer)
    .with("roles", roles)
    .on("user", Some(user_id))
    .action(action)
    .publish(events)
    .await;
}
