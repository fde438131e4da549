//! Who may see and review a capsule version. A private version is its publishing
//! tenant's alone; a public one, once approved, is everyone's; the platform's own are
//! public. A reviewer never approves their own submission, and a public submission
//! (what every tenant will see) is reviewed by the platform's operators.

use somagent_common::auth::{Capability, Principal};
use somagent_common::error::{ApiError, ErrorCode};

use crate::store::{PLATFORM, Package};

/// Whether `principal`'s tenant may see `package` at all (a version it may not see is
/// answered as not found).
pub fn sees(principal: &Principal, package: &Package) -> bool {
    package.publisher == principal.tenant.as_str()
        || package.publisher == PLATFORM
        || (package.visibility == "public" && package.status == "approved")
        || reviews_public(principal) && package.visibility == "public"
}

/// Whether `principal` reviews the marketplace's public submissions.
pub fn reviews_public(principal: &Principal) -> bool {
    principal.can(Capability::CapsulesReview) && principal.can(Capability::PlatformAdmin)
}

/// Ok if `principal` may approve or reject `package`.
pub fn may_review(principal: &Principal, package: &Package) -> Result<(), ApiError> {
    principal.require(Capability::CapsulesReview)?;
    if package.submitted_by == principal.subject && package.publisher == principal.tenant.as_str() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a submission is reviewed by someone other than its submitter",
        ));
    }
    let allowed = if package.visibility == "public" {
        principal.can(Capability::PlatformAdmin)
    } else {
        package.publisher == principal.tenant.as_str()
    };
    if allowed {
        Ok(())
    } else if package.visibility == "public" {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "a public submission is reviewed by the platform's operators (`platform:admin`)",
        )
        .with_details(serde_json::json!({ "missing_capability": "platform:admin" })))
    } else {
        Err(ApiError::not_found("submission"))
    }
}

/// The environments a tenant installs into.
pub fn environment(raw: &str) -> Result<&'static str, ApiError> {
    match raw {
        "" | "prod" => Ok("prod"),
        "staging" => Ok("staging"),
        _ => Err(ApiError::validation(
            "environment",
            "is `prod` or `staging`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use somagent_common::auth::Role;
    use somagent_common::tenant::TenantId;

    fn person(tenant: &str, subject: &str, caps: &[Capability]) -> Principal {
        Principal {
            tenant: TenantId::parse(tenant).unwrap(),
            subject: subject.into(),
            username: None,
            roles: BTreeSet::from([Role::Admin]),
            capabilities: caps.iter().copied().collect(),
            issuer: "test".into(),
            token_id: None,
            expires_at: None,
            issued_at: None,
            actor: None,
            auth_methods: Vec::new(),
            api_key: None,
            audiences: Vec::new(),
        }
    }

    fn package(publisher: &str, by: &str, visibility: &str, status: &str) -> Package {
        Package {
            id: "p".into(),
            capsule_id: "c1".into(),
            version: "1.0.0".into(),
            version_key: String::new(),
            publisher: publisher.into(),
            submitted_by: by.into(),
            visibility: visibility.into(),
            status: status.into(),
            kind: "agent".into(),
            name: "n".into(),
            summary: String::new(),
            category: String::new(),
            tags: Vec::new(),
            definition: String::new(),
            attestation_hash: String::new(),
            signature: String::new(),
            key_id: String::new(),
            notes: String::new(),
            reviewer: None,
            reviewed_at: None,
            review_notes: None,
            created_at: 0,
        }
    }

    #[test]
    fn private_versions_are_their_tenants_alone() {
        let mine = package("acme", "u1", "private", "approved");
        assert!(sees(&person("acme", "u2", &[]), &mine));
        assert!(!sees(
            &person("other", "u9", &[Capability::CapsulesReview]),
            &mine
        ));
        let pending_public = package("acme", "u1", "public", "pending");
        assert!(!sees(&person("other", "u9", &[]), &pending_public));
        assert!(sees(
            &person(
                "root",
                "op",
                &[Capability::CapsulesReview, Capability::PlatformAdmin]
            ),
            &pending_public
        ));
        assert!(sees(
            &person("other", "u9", &[]),
            &package("acme", "u1", "public", "approved")
        ));
        assert!(sees(
            &person("other", "u9", &[]),
            &package(PLATFORM, "platform", "public", "approved")
        ));
    }

    #[test]
    fn nobody_approves_their_own_and_public_needs_the_platform() {
        let review = [Capability::CapsulesReview];
        let private = package("acme", "u1", "private", "pending");
        assert!(may_review(&person("acme", "u1", &review), &private).is_err());
        assert!(may_review(&person("acme", "u2", &review), &private).is_ok());
        assert!(may_review(&person("acme", "u2", &[]), &private).is_err());
        assert!(may_review(&person("other", "u3", &review), &private).is_err());
        let public = package("acme", "u1", "public", "pending");
        assert!(may_review(&person("acme", "u2", &review), &public).is_err());
        let operator = [Capability::CapsulesReview, Capability::PlatformAdmin];
        assert!(may_review(&person("root", "op", &operator), &public).is_ok());
    }
}
