//! What each service may do for a user when it calls another: the only capabilities a
//! service token can carry, per caller and callee. A pair not listed gets no token at
//! all (the internet-facing gateway, notably, is in no row: it forwards the user's own
//! token and never acts for anyone).

use somagent_common::auth::Capability;

/// (caller, callee, capabilities): what each call really needs today.
const GRANTS: &[(&str, &str, &[Capability])] = &[
    // A session turn's checks of the prompt, each tool call and the answer.
    ("orchestrator", "policy", &[Capability::PolicyRead]),
    // A session turn's model call.
    ("orchestrator", "slm", &[Capability::ModelsUse]),
    // slm reads the tenant's output guard to check answers as they stream, and asks
    // for a decision on a prompt that came over the bus (async inference).
    ("slm", "policy", &[Capability::PolicyRead]),
    // Policy reads the tenant's constitution to compile it, for a turn's check.
    ("policy", "constitution", &[Capability::ConstitutionRead]),
    // A session turn offers the user's tools to the model and runs its calls (the
    // memory tool's actions need the user's memory capabilities).
    (
        "orchestrator",
        "tool",
        &[
            Capability::ToolsRead,
            Capability::ToolsInvoke,
            Capability::MemoryRead,
            Capability::MemoryWrite,
        ],
    ),
    // The tool service's decision on a call that came with a service token.
    ("tool", "policy", &[Capability::PolicyRead]),
    // The memory tool's calls, for the user whose agent made them.
    (
        "tool",
        "memory",
        &[Capability::MemoryRead, Capability::MemoryWrite],
    ),
    // Memory embeds texts and queries for the user (a reader may search what they may
    // read), and names the embedding model's collection.
    (
        "memory",
        "slm",
        &[
            Capability::ModelsUse,
            Capability::ModelsRead,
            Capability::MemoryRead,
        ],
    ),
    // Notification reads the preferences of the users it tells.
    ("notification", "settings", &[Capability::SettingsRead]),
    // Notification posts to Slack through the tenant's Slack tool, as the user it
    // tells (their own credential rules, limits and metering apply).
    ("notification", "tool", &[Capability::ToolsInvoke]),
    // A session turn reads the tenant's session settings (recall, tool rounds,
    // approval timeouts).
    ("orchestrator", "settings", &[Capability::SettingsRead]),
    // slm and the tool service hold a call's largest cost against the user's tenant's
    // budgets before they make it, and settle it after (a reader's search embeds its
    // query under `memory:read`).
    (
        "slm",
        "billing",
        &[Capability::ModelsUse, Capability::MemoryRead],
    ),
    ("tool", "billing", &[Capability::ToolsInvoke]),
    // A session runs as an installed capsule: its verified definition, when the
    // session opens and before each turn.
    ("orchestrator", "capsule-repo", &[Capability::CapsulesRead]),
    // A session turn recalls memories and passages for its prompt, and remembers.
    (
        "orchestrator",
        "memory",
        &[Capability::MemoryRead, Capability::MemoryWrite],
    ),
];

/// The services that may ask who administers a tenant: notification tells them of
/// budget thresholds, disabled webhooks and whatever else is for the tenant's admins.
const LISTS_ADMINS: &[&str] = &["notification"];

/// Whether `caller` may list a tenant's administrators.
pub fn lists_admins(caller: &str) -> bool {
    LISTS_ADMINS.contains(&caller)
}

/// What `caller` may ask of `callee` for a user, or `None` if it may not call it so.
pub fn allowed(caller: &str, callee: &str) -> Option<&'static [Capability]> {
    GRANTS
        .iter()
        .find(|(from, to, _)| *from == caller && *to == callee)
        .map(|(_, _, caps)| *caps)
}

/// Whether `caller` may get service tokens at all.
pub fn acts_for_users(caller: &str) -> bool {
    GRANTS.iter().any(|(from, _, _)| *from == caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_never_acts_for_users() {
        assert!(!acts_for_users("gateway"));
        assert!(
            somagent_common::service::SERVICES
                .iter()
                .all(|s| allowed("gateway", s.name).is_none())
        );
    }

    #[test]
    fn every_row_names_real_services() {
        let known = |n: &str| {
            somagent_common::service::SERVICES
                .iter()
                .any(|s| s.name == n)
        };
        assert!(
            GRANTS
                .iter()
                .all(|(from, to, caps)| known(from) && known(to) && !caps.is_empty())
        );
    }
}
