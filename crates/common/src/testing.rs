//! For test suites only: what a real-server test needs from its environment.

/// Whether this is the CI run, where every real server must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The value of `SOMAGENT_TEST_<name>` (a real server's URL, a model's path), set by
/// `scripts/ci-services.sh`. Without it the test says so and does not run there,
/// except under `CI=true`, where a missing server fails the run: a real-server suite is
/// never skipped silently.
pub fn required_env(name: &str) -> Option<String> {
    let var = format!("SOMAGENT_TEST_{name}");
    match std::env::var(&var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if in_ci() => {
            panic!("CI=true but {var} is not set: start the servers with scripts/ci-services.sh")
        }
        _ => {
            eprintln!("{var} is not set: what needs it does not run here");
            None
        }
    }
}
