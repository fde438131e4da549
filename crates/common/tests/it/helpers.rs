//! Which backends a suite runs on.

/// The real server's URL from `SOMAGENT_TEST_<CONCERN>_URL`. Under `CI=true` a missing
/// URL is a failure: the real-server suite must not be skipped silently.
pub fn real_url(concern: &str) -> Option<String> {
    let var = format!("SOMAGENT_TEST_{concern}_URL");
    match std::env::var(&var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {var} is not set: start the servers with scripts/ci-services.sh")
        }
        _ => {
            eprintln!("{var} is not set: the {concern} suite runs on the embedded engine only");
            None
        }
    }
}

/// A name no other test run uses, for schemas, topics, groups and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub fn tenant(name: &str) -> somagent_common::tenant::TenantId {
    somagent_common::tenant::TenantId::parse(name).expect("a valid tenant id")
}
