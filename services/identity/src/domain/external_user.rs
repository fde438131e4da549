//! What a person of an external OIDC issuer becomes on the platform: their roles and
//! capabilities, and the username they are provisioned under.

use std::collections::BTreeSet;

use somagent_common::auth::{Capability, Role};

use super::names;

/// Capabilities an external issuer may ever grant beside roles, when its configuration
/// names them (`mapping.grantable`). `platform:admin` is not among them: it belongs to
/// the platform's own operators, never to an outside issuer.
const GRANTABLE_BY_ISSUER: &[Capability] = &[
    Capability::ModerationBypass,
    Capability::TrainingAdmin,
    Capability::BillingAdmin,
];

/// The roles the issuer gives and what they grant, plus the capabilities it claims
/// beside roles that this issuer is configured to grant (`allowed`) and any issuer may;
/// sorted, so a change is seen by comparison.
pub fn grants(
    roles: &BTreeSet<Role>,
    claimed: &BTreeSet<Capability>,
    allowed: &[String],
) -> (Vec<Role>, Vec<Capability>) {
    let mut capabilities: Vec<Capability> = roles.iter().flat_map(|r| r.capabilities()).collect();
    capabilities.extend(
        claimed
            .iter()
            .filter(|c| GRANTABLE_BY_ISSUER.contains(c) && allowed.iter().any(|a| a == c.as_str())),
    );
    capabilities.sort();
    capabilities.dedup();
    (roles.iter().copied().collect(), capabilities)
}

/// The issuer's name for the person when it is a valid username here, lowercased.
pub fn preferred_username(preferred: Option<&str>) -> Option<String> {
    let name = preferred?.to_lowercase();
    names::username(&name).ok().map(|()| name)
}

/// A username no other person can have: derived from the issuer and subject, used when
/// the issuer names none usable or its name is already someone else's here (never merge
/// two people by name).
pub fn derived_username(issuer: &str, subject: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}:{issuer}:{subject}", issuer.len()).as_bytes(),
    );
    format!(
        "ext-{}",
        &data_encoding::HEXLOWER.encode(digest.as_ref())[..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_bring_their_capabilities_and_an_issuer_never_grants_platform_admin() {
        let roles = BTreeSet::from([Role::Operator]);
        let claimed = BTreeSet::from([Capability::PlatformAdmin, Capability::BillingAdmin]);
        let allowed = ["billing.admin".to_owned(), "platform:admin".to_owned()];
        let (granted_roles, caps) = grants(&roles, &claimed, &allowed);
        assert_eq!(granted_roles, [Role::Operator]);
        assert!(caps.contains(&Capability::SessionsWrite));
        assert!(caps.contains(&Capability::BillingAdmin));
        assert!(!caps.contains(&Capability::PlatformAdmin));
        assert!(!caps.contains(&Capability::UsersWrite));
        // An issuer not configured to grant it claims it in vain.
        let (_, caps) = grants(&roles, &claimed, &[]);
        assert!(!caps.contains(&Capability::BillingAdmin));
    }

    #[test]
    fn usernames_come_from_the_issuer_when_valid_else_from_the_subject() {
        assert_eq!(preferred_username(Some("Alice")).as_deref(), Some("alice"));
        assert_eq!(preferred_username(Some("a b")), None);
        assert_eq!(preferred_username(None), None);
        let derived = derived_username("http://kc/realms/x", "subject-1");
        assert!(names::username(&derived).is_ok(), "{derived}");
        assert_ne!(derived, derived_username("http://kc/realms/y", "subject-1"));
    }
}
