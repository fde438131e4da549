//! Which backends a suite runs on.

/// The real server's URL from `SOMAGENT_TEST_<CONCERN>_URL`. Under `CI=true` a missing
/// URL is a failure: the real-server suite must not be skipped silently.
pub fn real_url(concern: &str) -> Option<String> {
    somagent_common::testing::required_env(&format!("{concern}_URL"))
}

/// A name no other test run uses, for schemas, topics, groups and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub fn tenant(name: &str) -> somagent_common::tenant::TenantId {
    somagent_common::tenant::TenantId::parse(name).expect("a valid tenant id")
}
