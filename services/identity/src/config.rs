//! Identity's own settings: `[identity]` in the configuration file,
//! `SOMAGENT_IDENTITY__<KEY>` in the environment.

use serde::Deserialize;

#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// The platform admin's first password (or `SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD_FILE`);
    /// unset means one is generated and printed once.
    pub bootstrap_admin_password: Option<String>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field(
                "bootstrap_admin_password",
                &self.bootstrap_admin_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}
